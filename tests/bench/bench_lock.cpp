// Lock and Limiter: acquire + release cycles, one thread and threads sharing
// one Connection, beside raw hiredis doing the same round trips.

#include <memory>
#include <string>

#include <fmt/format.h>

#include <retools/limiter.hpp>
#include <retools/lock.hpp>

#include "raw.hpp"
#include "rows.hpp"

namespace bench {
namespace {

// The floor's lock: SET NX PX to take it (the first attempt succeeds, as in the
// benchmark), compare-and-delete script to release it: two round trips.
constexpr std::string_view kReleaseLua =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

std::string load_script(RawConnection& raw, std::string_view lua) {
    raw.cmd("SCRIPT", "LOAD", lua);
    auto reply = raw.read();
    return std::string(reply->str, reply->len);
}

// A 32-hex token per acquisition, like the lock's, from a counter (cheap).
std::string token(std::uint64_t n) {
    return fmt::format("{:032x}", n * 0x9E3779B97F4A7C15ull);
}

void raw_lock_cycles(RawConnection& raw, const std::string& sha, const std::string& key, std::size_t ops,
                     std::uint64_t seed) {
    for (std::size_t i = 0; i < ops; ++i) {
        std::string t = token(seed + i);
        raw.cmd("SET", key, t, "NX", "PX", "60000");
        if (raw.read()->type != REDIS_REPLY_STATUS) throw std::runtime_error("floor lock not acquired");
        raw.cmd("EVALSHA", sha, "1", key, t);
        raw.read();
    }
}

RunFn raw_lock(std::size_t threads) {
    return [threads](const Env& env, std::size_t count) {
        std::vector<std::unique_ptr<RawConnection>> raws;
        for (std::size_t t = 0; t < threads; ++t) raws.push_back(std::make_unique<RawConnection>(env));
        std::string sha = load_script(*raws[0], kReleaseLua);
        return Run{run_threads(threads, count,
                               [&](std::size_t t, std::size_t ops) {
                                   raw_lock_cycles(*raws[t], sha, fmt::format("bench:lock:{}", t), ops,
                                                   t << 40);
                               }),
                   {}};
    };
}

RunFn retools_lock(std::size_t threads) {
    return [threads](const Env& env, std::size_t count) {
        retools::Connection shared = env.conn;
        return Run{run_threads(threads, count,
                               [&](std::size_t t, std::size_t ops) {
                                   std::string key = fmt::format("bench:lock:{}", t);
                                   for (std::size_t i = 0; i < ops; ++i) {
                                       retools::Lock lock{key, {.connection = shared}};
                                   }
                               }),
                   {}};
    };
}

// The floor's limiter: one script that counts, prunes expired holders and adds
// atomically (the original's ZCARD/ZREMRANGEBYSCORE/ZADD), then ZREM.
constexpr std::string_view kLimiterLua =
    "if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then "
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2]) "
    "  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end "
    "end "
    "redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4]) return 1";

Run raw_limiter(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::string sha = load_script(raw, kLimiterLua);
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    double now = static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                         std::chrono::system_clock::now().time_since_epoch())
                                                         .count()) /
                                 1e6;
                    std::string now_text = fmt::format("{}", now), until = fmt::format("{}", now + 10);
                    raw.cmd("EVALSHA", sha, "1", "bench:limiter", "10", now_text, until, "operation-1");
                    if (raw.read()->integer != 1) throw std::runtime_error("floor limiter refused");
                    raw.cmd("ZREM", "bench:limiter", "operation-1");
                    raw.read();
                }
            }),
            {}};
}

Run retools_limiter(const Env& env, std::size_t count) {
    retools::Limiter limiter{{.limit = 10, .prefix = "bench:limiter", .connection = env.conn}};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    if (!limiter.acquire_limit("operation-1")) throw std::runtime_error("limiter refused");
                    limiter.release_limit("operation-1");
                }
            }),
            {}};
}

}  // namespace

void add_lock_rows(const Env& env, std::vector<Row>& rows) {
    std::size_t n = env.counts.ops;
    rows.push_back({.id = "lock_cycle",
                    .label = "Lock: acquire + release",
                    .count = n,
                    .retools = retools_lock(1),
                    .floor = raw_lock(1),
                    .floor_target = 0.9});
    rows.push_back({.id = "limiter_cycle",
                    .label = "Limiter: acquire + release",
                    .count = n,
                    .retools = retools_limiter,
                    .floor = raw_limiter,
                    .floor_target = 0.9});
    for (std::size_t threads : {4, 16})
        rows.push_back({.id = fmt::format("lock_threads_{}", threads),
                        .label = fmt::format("Lock cycles, {} threads sharing one pool", threads),
                        .count = n * 2,
                        .retools = retools_lock(threads),
                        .floor = raw_lock(threads),
                        .floor_target = 0.8});
}

}  // namespace bench
