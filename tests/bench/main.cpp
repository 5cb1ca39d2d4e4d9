// retools-bench: every benchmark against one private redis-server, beside the
// raw-hiredis floor and the peers, in alternating rounds; prints the table and
// writes it as Markdown.
//
//   retools-bench [--smoke] [--rounds N] [--peer-rounds N] [--ops N] [--batches N] [--jobs N]
//                 [--fork-jobs N] [--rss-jobs N] [--only SUBSTRING] [--no-peers] [--no-floor] [--no-retools]
//                 [--url redis://host:port/0] [--markdown FILE] [--peers-dir DIR]

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <retools/connection.hpp>

#include "harness.hpp"
#include "redis_cluster.hpp"
#include "redis_server.hpp"
#include "rows.hpp"
#include "tls_server.hpp"

namespace {

[[noreturn]] void usage(const std::string& why) {
    (why.empty() ? std::cout : std::cerr)
        << (why.empty() ? "" : "retools-bench: " + why + "\n")
        << "usage: retools-bench [--smoke] [--rounds N] [--peer-rounds N] [--ops N] [--batches N] [--jobs N] "
           "[--fork-jobs N] [--rss-jobs N] [--only SUBSTRING] [--no-peers] [--no-floor] [--no-retools] "
           "[--url URL] "
           "[--markdown FILE] [--peers-dir DIR]\n";
    std::exit(why.empty() ? 0 : 2);
}

std::size_t number(const char* text, const char* flag) {
    char* end = nullptr;
    long long v = std::strtoll(text, &end, 10);
    if (!*text || *end || v <= 0) usage(fmt::format("{} needs a positive number, got {:?}", flag, text));
    return static_cast<std::size_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
    bench::Counts counts;
    std::string markdown_path, url, only;
    std::string peers_dir = RETOOLS_BENCH_PEERS_DIR;
    bool peers_on = true, no_floor = false, no_retools = false;
    bool smoke = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            usage("");
        } else if (a == "--smoke") {
            smoke = true;
            counts = {.ops = 200,
                      .batches = 2,
                      .jobs = 500,
                      .fork_jobs = 50,
                      .rss_jobs = 1000,
                      .rounds = 1,
                      .peer_rounds = 1};
        } else if (a == "--rounds")
            counts.rounds = static_cast<int>(number(value(), "--rounds"));
        else if (a == "--peer-rounds")
            counts.peer_rounds = static_cast<int>(number(value(), "--peer-rounds"));
        else if (a == "--ops")
            counts.ops = number(value(), "--ops");
        else if (a == "--batches")
            counts.batches = number(value(), "--batches");
        else if (a == "--jobs")
            counts.jobs = number(value(), "--jobs");
        else if (a == "--fork-jobs")
            counts.fork_jobs = number(value(), "--fork-jobs");
        else if (a == "--rss-jobs")
            counts.rss_jobs = number(value(), "--rss-jobs");
        else if (a == "--only")
            only = value();
        else if (a == "--no-peers")
            peers_on = false;
        else if (a == "--no-floor")
            no_floor = true;  // for profiling one side
        else if (a == "--no-retools")
            no_retools = true;
        else if (a == "--url")
            url = value();
        else if (a == "--markdown")
            markdown_path = value();
        else if (a == "--peers-dir")
            peers_dir = value();
        else
            usage("unknown argument " + a);
    }
    if (counts.rss_jobs <= counts.jobs) usage("--rss-jobs must be larger than --jobs");

    std::unique_ptr<retools::test::TestCertificates> certs;
    std::unique_ptr<retools::test::RedisServer> server;
    std::unique_ptr<retools::test::RedisCluster> cluster;
    std::string tls_url;
    int tls_port = 0;
    if (url.empty()) {
        // The private server also listens on a TLS port (certificates made now) for the TLS rows.
        certs = std::make_unique<retools::test::TestCertificates>();
        tls_port = retools::test::free_port();
        server = std::make_unique<retools::test::RedisServer>(retools::test::ServerOptions{
            .args = {"--tls-port", std::to_string(tls_port), "--tls-cert-file", certs->server_cert,
                     "--tls-key-file", certs->server_key, "--tls-ca-cert-file", certs->ca_cert,
                     "--tls-auth-clients", "no"}});
        url = server->url();
        tls_url = fmt::format("rediss://127.0.0.1:{}/0?ca_file={}", tls_port, certs->ca_cert);
        cluster = std::make_unique<retools::test::RedisCluster>();  // for the Cluster rows
    }
    auto options = retools::ConnectionOptions::from_url(url);
    if (options.db != 0) usage("--url must name database 0 (peers use databases 1 to 4)");
    ::setenv("REDIS_URL", url.c_str(), 1);
    bench::Env env{.conn = retools::Connection{options},
                   .host = options.host,
                   .port = options.port,
                   .url = url,
                   .counts = counts,
                   .tls_url = tls_url,
                   .tls_port = tls_port,
                   .tls_ca = certs ? certs->ca_cert : std::string(),
                   .cluster = cluster.get()};
    retools::global_connection() = env.conn;
    fmt::print(stderr, "retools-bench: redis-server at {}{}\n", url, smoke ? " (smoke counts)" : "");

    std::vector<bench::Row> rows;
    bench::add_connection_rows(env, rows);
    bench::add_cache_rows(env, rows);
    bench::add_lock_rows(env, rows);
    bench::add_queue_rows(env, rows);
    bench::add_worker_rows(env, rows);
    bench::add_cluster_rows(env, rows);
    if (!only.empty())
        std::erase_if(rows, [&](const bench::Row& r) { return r.id.find(only) == std::string::npos; });
    for (auto& r : rows) {
        if (no_floor) r.floor = nullptr;
        if (no_retools) r.retools = nullptr;
    }

    std::vector<bench::Peer> peers;
    if (peers_on) {
        const char* py = std::getenv("RETOOLS_BENCH_PYTHON");
        std::string python = py && *py ? py : "/usr/bin/python3";  // Debian's, which sees python3-* packages
        peers = {
            {"redis-py",
             "python3-redis",
             {python, peers_dir + "/redis_py_lock.py"},
             1,
             {"lock_cycle", "lock_handover"}},
            {"dogpile.cache",
             "python3-dogpile.cache",
             {python, peers_dir + "/dogpile_cache.py"},
             2,
             {"cache_hit_nostats", "cache_hit_json"}},
            {"rq",
             "python3-rq",
             {python, peers_dir + "/rq_bench.py"},
             3,
             {"enqueue_one", "enqueue_batch", "worker_thread_1", "worker_fork"}},
            {"sidekiq", "ruby-sidekiq", {"ruby", peers_dir + "/sidekiq_bench.rb"}, 4, {"worker_thread_16"}},
        };
        if (!only.empty())
            std::erase_if(peers, [&](const bench::Peer& p) {
                for (auto& id : p.rows)
                    if (id.find(only) != std::string::npos) return false;
                return p.name.find(only) == std::string::npos;
            });
    }

    bench::Results results = bench::run_all(env, rows, peers);

    auto ratio = [&](std::string a_row, std::string a_col, std::string b_row, std::string b_col) {
        return [&results, a_row, a_col, b_row, b_col]() -> std::optional<double> {
            auto a = results.rate(a_row, a_col);
            auto b = results.rate(b_row, b_col);
            if (!a || !b) return std::nullopt;
            return *a / *b;
        };
    };
    std::vector<bench::Target> targets;
    for (auto& row : rows)
        if (row.floor_target > 0)
            targets.push_back({fmt::format("{} ≥ {}× floor", row.label, row.floor_target),
                               ratio(row.id, "retools", row.id, "floor"), row.floor_target});
    targets.push_back({"worker, 16 threads ≥ 10× Sidekiq (concurrency 10)",
                       ratio("worker_thread_16", "retools", "worker_thread_16", "sidekiq"), 10});
    targets.push_back({"worker, 16 threads ≥ 100× RQ forking Worker",
                       ratio("worker_thread_16", "retools", "worker_fork", "rq"), 100});
    targets.push_back({"worker, fork mode ≥ 2× RQ forking Worker",
                       ratio("worker_fork", "retools", "worker_fork", "rq"), 2});
    targets.push_back({"cache multi-get of 100 keys ≥ 20× 100 single hits",
                       ratio("cache_get_many_100", "retools", "cache_hit_100_single", "retools"), 20});
    targets.push_back({"  the same for raw hiredis (the ceiling of the line above)",
                       ratio("cache_get_many_100", "floor", "cache_hit_100_single", "floor"), 0});
    targets.push_back({"enqueue from 16 threads: 3-master cluster vs one server (same run)",
                       ratio("enqueue_16_cluster", "retools", "enqueue_16_single", "retools"), 0});
    targets.push_back({"cache near-cache hit ≥ 1,000,000 hits/s (one thread)",
                       [&results]() { return results.rate("cache_hit_near", "retools"); }, 1000000, 0,
                       "{:.0f} hits/s"});
    targets.push_back({"lock hand-over (process to process) p50 < 10 ms",
                       [&results]() { return results.metric("lock_handover", "retools", "p50 µs"); }, 0,
                       10000, "{:.0f} µs"});
    targets.push_back({"batch enqueue ≥ 200,000 jobs/s",
                       [&results]() { return results.rate("enqueue_batch", "retools"); }, 200000, 0,
                       "{:.0f} jobs/s"});
    targets.push_back(
        {fmt::format("worker RSS after {} vs {} jobs differs < 10%", counts.rss_jobs, counts.jobs),
         [&results]() -> std::optional<double> {
             auto growth = results.metric("worker_rss", "retools", "RSS growth %");
             if (!growth) return std::nullopt;
             return std::abs(*growth);
         },
         0, 10, "{:.1f} %"});
    std::erase_if(targets, [&](const bench::Target& t) { return !only.empty() && !t.measured(); });

    std::string md = bench::render_markdown(
        results, targets, smoke ? "retools benchmarks (smoke counts)" : "retools benchmarks");
    std::cout << md << std::flush;
    if (!markdown_path.empty()) {
        std::ofstream out(markdown_path);
        out << md;
        if (!out) {
            std::cerr << "retools-bench: cannot write " << markdown_path << "\n";
            return 1;
        }
        std::cerr << "retools-bench: wrote " << markdown_path << "\n";
    }
    return 0;
}
