// A tour of retools against the server in REDIS_URL (scripts/demo.sh starts a
// private one). Each section prints what happened.
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include <retools/retools.hpp>

using namespace std::chrono_literals;

namespace {

void section(std::string_view title) { fmt::print("\n== {} ==\n", title); }

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

    for (const auto& key : conn.command("KEYS", "retools:*demo_short:*").as_array()) conn.command("DEL", key.view());
    conn.command("SREM", "retools:regions", "demo_short");
}


// ---- lock ----------------------------------------------------------------

void lock_demo(const retools::Connection& conn) {
    section("Lock");
    (void)conn;
}


// ---- limiter ----------------------------------------------------------------

void limiter_demo(const retools::Connection& conn) {
    section("Limiter");
    (void)conn;
}


// ---- queue ----------------------------------------------------------------

void queue_demo(const retools::Connection& conn) {
    section("Queue");
    (void)conn;
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
