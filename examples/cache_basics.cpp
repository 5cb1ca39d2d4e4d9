// Cache basics: a region, cached functions, hit/miss statistics and
// invalidation. Run it against any Redis: REDIS_URL=redis://127.0.0.1:6379/0.
// It only touches keys of the region "examples_cache" and deletes them at the end.
//
// Exit status: 0 when every check passed, 1 otherwise.
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <retools/cache.hpp>

using namespace std::chrono_literals;

namespace {

int failures = 0;

// Prints one check and remembers failures for the exit status.
void check(bool ok, std::string_view what) {
    fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++failures;
}

// The expensive functions we want to cache. The counters show when they really run.
int square_calls = 0;
long slow_square(int x) {
    ++square_calls;
    return static_cast<long>(x) * x;
}

void cleanup(const retools::Connection& conn) {
    // Every key of the region: values, key sets, hit/miss counters and locks.
    // (KEYS is fine for an example; prefer SCAN on a large production Redis.)
    for (const auto& key : conn.command("KEYS", "retools:*examples_cache*").as_array())
        conn.command("DEL", key.view());
    conn.command("SREM", "retools:regions", "examples_cache");
}

}  // namespace

int main() {
    try {
        // global_connection() reads REDIS_URL (default redis://127.0.0.1:6379/0).
        const retools::Connection& conn = retools::global_connection();
        cleanup(conn);  // start from a clean slate if an earlier run was interrupted

        // 1. A region: values stay fresh for 60 s and live in Redis for a week.
        retools::CacheRegion::add_region("examples_cache", 60s);

        // 2. Cached functions keep the wrapped function's signature. The cache
        //    key is the arguments rendered like Python's str(), joined by spaces.
        auto square = retools::cache_region("examples_cache", "examples.math.square", &slow_square);

        int search_calls = 0;
        auto search = retools::cache_region("examples_cache", "examples.search",
                                            [&](const std::string& term, int limit) {
                                                ++search_calls;
                                                std::vector<std::string> found;
                                                for (int i = 1; i <= limit; ++i)
                                                    found.push_back(fmt::format("{}-{}", term, i));
                                                return found;  // stored as JSON
                                            });

        check(square(4) == 16 && square(4) == 16 && square(4) == 16, "square(4) == 16, three times");
        check(square_calls == 1, "slow_square ran once for three calls");
        check(square(5) == 25 && square_calls == 2,
              "another argument is another key: square(5) ran the function");

        std::vector<std::string> found = search("bunny", 2);
        check(found == std::vector<std::string>{"bunny-1", "bunny-2"},
              fmt::format("search(\"bunny\", 2) -> {}", found));
        search("bunny", 2);
        check(search_calls == 1, "search ran once for two calls");
        check(search.key("bunny", 2) == "bunny 2", "the key of search(\"bunny\", 2) is \"bunny 2\"");

        // 3. A fresh hit is one round trip.
        auto before = conn.round_trips();
        square(4);
        check(conn.round_trips() - before == 1, "a cache hit costs one round trip");

        // 4. Statistics, per key, per function (namespace) and per region, for today.
        //    A call that regenerated the value counts as a miss, every other call as a hit.
        retools::CacheStats s = retools::cache_stats("examples_cache", "examples.math.square", "4");
        fmt::print("square(4) today: {} hits, {} misses, hit ratio {:.2f}\n", s.hits, s.misses,
                   s.hit_ratio());
        check(s.hits == 3 && s.misses == 1, "square(4): 3 hits, 1 miss");

        retools::NamespaceStats ns = square.stats();
        check(ns.keys.size() == 2 && ns.total.calls() == 5, "square: 2 keys, 5 calls in all");

        retools::RegionStats region = retools::region_stats("examples_cache");
        for (const auto& [name, n] : region.namespaces)
            fmt::print("  {}: {} calls, {:.0f}% hits\n", name, n.total.calls(), n.total.hit_ratio() * 100);
        check(region.namespaces.size() == 2 && region.total.calls() == 7, "region: 2 namespaces, 7 calls");

        // 5. Invalidation marks values stale (nothing is deleted); the next call recomputes.
        retools::invalidate_function(square, 4);  // one argument set
        square(4);
        check(square_calls == 3, "after invalidate_function(square, 4), square(4) ran again");
        square(5);
        check(square_calls == 3, "square(5) was not invalidated: still a hit");

        retools::invalidate_function(square);  // every value of the function
        square(4);
        square(5);
        check(square_calls == 5, "after invalidate_function(square), both keys ran again");

        retools::invalidate_region("examples_cache");  // every value of the region
        search("bunny", 2);
        check(search_calls == 2, "after invalidate_region, search ran again");

        // 6. The switch: bypass Redis entirely (e.g. in unit tests of your code).
        retools::CacheRegion::enabled = false;
        square(4);
        retools::CacheRegion::enabled = true;
        check(square_calls == 6, "with CacheRegion::enabled = false the function is just called");

        // 7. An unknown region is reported when the cached function is called.
        auto typo = retools::cache_region("no_such_region", "examples.typo", &slow_square);
        try {
            typo(1);
            check(false, "an unknown region throws");
        } catch (const retools::CacheConfigurationError& e) {
            check(true, fmt::format("an unknown region throws CacheConfigurationError: {}", e.what()));
        }

        cleanup(conn);
        check(conn.command("KEYS", "retools:*examples_cache*").size() == 0,
              "every key of the region was deleted");
    } catch (const retools::Error& e) {
        fmt::print(stderr, "cache_basics: {}\n", e.what());
        return 1;
    }
    if (failures) {
        fmt::print("cache_basics: {} check(s) failed\n", failures);
        return 1;
    }
    fmt::print("cache_basics: all checks passed\n");
    return 0;
}
