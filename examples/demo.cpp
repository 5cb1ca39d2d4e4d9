// A tour of retools against the server in REDIS_URL (scripts/demo.sh starts a
// private one). Each section prints what happened.
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <retools/retools.hpp>

using namespace std::chrono_literals;

namespace {

void section(std::string_view title) {
    fmt::print("\n== {} ==\n", title);
}

void connection_demo(const retools::Connection& conn) {
    section("Connection");
    conn.command("SET", "demo:greeting", "hello from retools");
    fmt::print("GET demo:greeting -> {}\n", conn.command("GET", "demo:greeting").as_string());
    retools::Pipeline p;
    for (int i = 0; i < 5; ++i) p.command("INCR", "demo:counter");
    auto before = conn.round_trips();
    auto replies = conn.execute(p);
    fmt::print("5 INCRs in one pipeline: counter = {} ({} round trip)\n", replies.back().as_integer(),
               conn.round_trips() - before);
    conn.command("DEL", "demo:greeting", "demo:counter");
}

// ---- cache ----------------------------------------------------------------

void cache_demo(const retools::Connection& conn) {
    section("Cache");
    retools::CacheRegion::add_region("demo_short", {.expires = 60s, .connection = conn});
    int calls = 0;
    auto search = retools::cache_region("demo_short", "demo.search", [&](const std::string& term, int limit) {
        ++calls;
        std::vector<std::string> found;
        for (int i = 1; i <= limit; ++i) found.push_back(fmt::format("{}-{}", term, i));
        return found;
    });
    for (int i = 0; i < 4; ++i) search("bunny", 3);
    search("kitten", 2);
    fmt::print("5 calls of search(): the function ran {} times; search(\"bunny\", 3) -> {}\n", calls,
               nlohmann::json(search("bunny", 3)).dump());
    retools::invalidate_function(search, "bunny", 3);
    search("bunny", 3);
    fmt::print("after invalidate_function(search, \"bunny\", 3): the function ran {} times\n", calls);

    auto before = conn.round_trips();
    search("kitten", 2);
    fmt::print("a hit costs {} round trip\n", conn.round_trips() - before);

    retools::RegionStats stats = retools::region_stats("demo_short");
    for (const auto& [ns, ns_stats] : stats.namespaces)
        for (const auto& [key, s] : ns_stats.keys)
            fmt::print("  {} [{}]: {} hits, {} misses\n", ns, key, s.hits, s.misses);
    fmt::print("region demo_short today: {} hits, {} misses (hit ratio {:.0f}%)\n", stats.total.hits,
               stats.total.misses, stats.total.hit_ratio() * 100);

    for (const auto& key : conn.command("KEYS", "retools:*demo_short:*").as_array())
        conn.command("DEL", key.view());
    conn.command("SREM", "retools:regions", "demo_short");
}

// ---- lock ----------------------------------------------------------------

void lock_demo(const retools::Connection& conn) {
    section("Lock");
    const std::string key = "demo:lock";
    {
        retools::Lock lock{key, {.expires = 5s, .connection = conn}};
        fmt::print("acquired {}: value {} (TTL {} ms)\n", key, conn.command("GET", key).as_string(),
                   conn.command("PTTL", key).as_integer());
        try {
            retools::Lock second{key, {.timeout = 0s, .connection = conn}};
        } catch (const retools::LockTimeout& e) {
            fmt::print("second locker with timeout 0: {}\n", e.what());
        }
    }

    // Four threads, each incrementing a counter with a non-atomic GET + SET
    // five times: the lock makes every update count.
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            retools::Lock lock{key, {.connection = conn, .max_retry_delay = 20ms}, std::defer_lock};
            for (int i = 0; i < 5; ++i) {
                std::unique_lock guard{lock};
                auto v = conn.command("GET", "demo:lock-counter").as_optional_string();
                conn.command("SET", "demo:lock-counter", (v ? std::stoll(*v) : 0) + 1);
            }
        });
    }
    for (auto& t : threads) t.join();
    fmt::print("4 threads x 5 locked GET+SET increments: counter = {}\n",
               conn.command("GET", "demo:lock-counter").as_string());

    retools::Lock short_lived{key, {.expires = 100ms, .connection = conn}};
    std::this_thread::sleep_for(150ms);  // the work outlived `expires`
    retools::Lock successor{key, {.timeout = 0s, .connection = conn}};
    fmt::print("holder whose key expired releases: {}; successor still owns it: {}\n",
               short_lived.release() == retools::ReleaseResult::lost ? "lost (nothing deleted)" : "released",
               successor.owns_lock());
    successor.unlock();
    conn.command("DEL", key, key + ":fence", key + ":signal", key + ":waiting", "demo:lock-counter");
}

// ---- limiter ----------------------------------------------------------------

void limiter_demo(const retools::Connection& conn) {
    section("Limiter");
    retools::Limiter limiter{{.limit = 2, .prefix = "demo:limiter", .expiration = 5s, .connection = conn}};
    std::atomic<int> inside{0}, most{0}, done{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&, t] {
            if (auto slot = limiter.acquire_for(fmt::format("worker-{}", t), 3s)) {
                int now = ++inside;
                for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {}
                std::this_thread::sleep_for(20ms);
                --inside;
                ++done;
            }  // the slot is released here
        });
    }
    for (auto& t : threads) t.join();
    fmt::print("6 workers, limit 2: {} finished, at most {} at once\n", done.load(), most.load());

    bool first = limiter.acquire_limit("operation-1");
    bool second = limiter.acquire_limit("operation-2");
    bool third = limiter.acquire_limit("operation-3");
    fmt::print("acquire_limit x3 with limit 2: {} {} {}; holders in ZSET demo:limiter: {}\n", first, second,
               third, limiter.holders());
    limiter.release_limit("operation-1");
    fmt::print("after release_limit(operation-1): operation-3 acquires: {}\n",
               limiter.acquire_limit("operation-3"));
    conn.command("DEL", "demo:limiter");
}

// ---- queue ----------------------------------------------------------------

void queue_demo(const retools::Connection& conn) {
    section("Queue");
    using nlohmann::json;
    retools::QueueManager qm{conn, "demo"};
    std::vector<std::string> ids = {
        qm.enqueue("demo.jobs:add", {{"a", 2}, {"b", 3}}, {.metadata = {{"result_ttl", 60}}}),
        qm.enqueue("demo.jobs:add", {{"a", 40}, {"b", 2}},
                   {.queue_name = "demo_high", .metadata = {{"result_ttl", 60}}}),
        qm.enqueue("demo.jobs:explode", json::object()),
        qm.enqueue("demo.jobs:not_registered", json::object()),
    };
    fmt::print("enqueued {} jobs on demo and demo_high\n", ids.size());

    // A worker taking demo_high first, in burst mode: it returns once both queues are empty.
    retools::Worker worker{{"demo_high", "demo"},
                           {.connection = conn, .handle_signals = false, .log = retools::WorkerLog::none}};
    worker.register_job("demo.jobs:add", [](const json& kw) -> json {
        fmt::print("  running add({}, {})\n", kw.at("a").get<int>(), kw.at("b").get<int>());
        return kw.at("a").get<int>() + kw.at("b").get<int>();
    });
    worker.register_job("demo.jobs:explode", [](const json&) -> json { throw std::runtime_error("boom"); });
    retools::WorkSummary summary = worker.work({.burst = true});
    fmt::print("worker drained the queues: {} succeeded, {} failed\n", summary.succeeded, summary.failed);

    for (const auto& id : {ids[0], ids[1]})
        if (auto result = qm.get_result(id))
            fmt::print("result of {}: {}\n", id.substr(0, 8), result->value.dump());
    for (const auto& failed : qm.failed_jobs()) {
        if (failed.worker != worker.id()) continue;  // someone else's failure: leave it
        fmt::print("failed job from queue {}: {}\n", failed.queue, failed.error);
        qm.remove_failed(failed);
    }

    for (const auto& id : ids) conn.command("DEL", "retools:result:" + id);
    conn.command("SREM", "retools:queues", "demo", "demo_high");
}

}  // namespace

int main() {
    try {
        retools::Connection& conn = retools::global_connection();
        fmt::print("retools demo against {}\n", conn.options().describe());
        connection_demo(conn);
        cache_demo(conn);
        lock_demo(conn);
        limiter_demo(conn);
        queue_demo(conn);
        fmt::print("\ndemo finished\n");
        return 0;
    } catch (const retools::Error& e) {
        fmt::print(stderr, "demo failed: {}\n", e.what());
        return 1;
    }
}
