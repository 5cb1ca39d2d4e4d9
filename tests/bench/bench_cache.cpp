// Cache: a fresh hit (statistics on and off) and a miss that regenerates,
// beside raw hiredis sending the same round trips as Python retools (a hit:
// MULTI/HGETALL/GET/INCR/EXEC; a miss: lock, store, release). Regions
// store pickle (the default): the cached string travels as its pickle, which
// retools decodes on every hit and the floor only receives; one more row
// caches a list of strings, which retools unpickles and its floor decodes
// from JSON with nlohmann (what the native format would do).

#include <algorithm>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/cache.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/pickle.hpp>

#include "raw.hpp"
#include "rows.hpp"
#include "util/clock.hpp"

namespace bench {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kRegion = "bench";
constexpr std::string_view kNamespace = "bench.load_things";
// What the cached functions return for ("bunny", 10), as stored: a string as
// its pickle (the default format); the floor's list of strings as JSON.
const std::string kValue =
    retools::pickle::dumps(std::string("bunny bunny bunny bunny bunny bunny bunny bunny bunny bunny "));
const std::string kJsonValue =
    R"(["bunny","bunny","bunny","bunny","bunny","bunny","bunny","bunny","bunny","bunny"])";
constexpr std::string_view kJsonNamespace = "bench.load_list";

std::string value_key(std::string_view key, std::string_view ns = kNamespace) {
    return fmt::format("retools:{}:{}:{}", kRegion, ns, key);
}
std::string hit_key(std::string_view date, std::string_view key) {
    return fmt::format("retools:hits:{}:{}:{}:{}", date, kRegion, kNamespace, key);
}
std::string miss_key(std::string_view date, std::string_view key) {
    return fmt::format("retools:misses:{}:{}:{}:{}", date, kRegion, kNamespace, key);
}

void raw_store(RawConnection& raw, const std::string& key, std::string_view ns = kNamespace,
               const std::string& value = kValue) {
    raw.cmd("HSET", value_key(key, ns), "created", retools::detail::python_repr(retools::detail::unix_now()),
            "value", value);
    raw.read();
}

// Hit with statistics: one MULTI/HGETALL/GET/INCR/EXEC pipeline.
template <Transport T = Transport::plain>
Run raw_hit_stats(const Env& env, std::size_t count) {
    RawConnection raw(env, T);
    raw_store(raw, "bunny 10");
    std::string vkey = value_key("bunny 10");
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    std::string hkey = hit_key(retools::detail::local_date(), "bunny 10");
                    raw.cmd("MULTI");
                    raw.cmd("HGETALL", vkey);
                    raw.cmd("GET", hkey);
                    raw.cmd("INCR", hkey);
                    raw.cmd("EXEC");
                    auto exec = raw.read(5);
                    if (exec->element[0]->elements != 4) throw std::runtime_error("floor: no cached value");
                }
            }),
            {}};
}

// Hit without statistics: HGETALL.
Run raw_hit_nostats(const Env& env, std::size_t count) {
    RawConnection raw(env);
    raw_store(raw, "bunny 10");
    std::string vkey = value_key("bunny 10");
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    raw.cmd("HGETALL", vkey);
                    if (raw.read()->elements != 4) throw std::runtime_error("floor: no cached value");
                }
            }),
            {}};
}

// Hit without statistics of a JSON value: HGETALL, then the same decoding
// into std::vector<std::string> that the default codec does.
Run raw_hit_json(const Env& env, std::size_t count) {
    RawConnection raw(env);
    raw_store(raw, "bunny 10", kJsonNamespace, kJsonValue);
    std::string vkey = value_key("bunny 10", kJsonNamespace);
    std::size_t total = 0;
    Run run{
        time_it([&] {
            for (std::size_t i = 0; i < count; ++i) {
                raw.cmd("HGETALL", vkey);
                auto reply = raw.read();
                if (reply->elements != 4) throw std::runtime_error("floor: no cached value");
                const redisReply* v =
                    std::string_view(reply->element[0]->str, reply->element[0]->len) == "value"
                        ? reply->element[1]
                        : reply->element[3];
                auto list =
                    nlohmann::json::parse(std::string_view(v->str, v->len)).get<std::vector<std::string>>();
                total += list.size();
            }
        }),
        {}};
    if (total != count * 10) throw std::runtime_error("floor: bad decoded value");
    return run;
}

// Miss with statistics: read+count, take the lock, read again, store, release,
// settle the counters: six round trips.
Run raw_miss(const Env& env, std::size_t count) {
    RawConnection raw(env);
    raw.cmd("SCRIPT", "LOAD",
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0");
    auto sha_reply = raw.read();
    std::string sha(sha_reply->str, sha_reply->len);
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    std::string key = fmt::format("bunny {}", i);
                    std::string date = retools::detail::local_date();
                    std::string vkey = value_key(key), hkey = hit_key(date, key);
                    raw.cmd("MULTI");
                    raw.cmd("HGETALL", vkey);
                    raw.cmd("GET", hkey);
                    raw.cmd("INCR", hkey);
                    raw.cmd("EXEC");
                    raw.read(5);
                    std::string lock_key = fmt::format("retools:lock:{}:{}:{}", kRegion, kNamespace, key);
                    std::string token = fmt::format("{:032x}", i);
                    raw.cmd("SET", lock_key, token, "NX", "PX", "3600000");
                    raw.read();
                    raw.cmd("HGETALL", vkey);
                    raw.read();
                    std::string value = retools::pickle::dumps(std::string(
                        "bunny bunny bunny bunny bunny bunny bunny bunny bunny bunny "));  // regenerated
                    raw.cmd("MULTI");
                    raw.cmd("HSET", vkey, "created",
                            retools::detail::python_repr(retools::detail::unix_now()), "value", value);
                    raw.cmd("EXPIRE", vkey, "604800");
                    raw.cmd("SADD", "retools:regions", kRegion);
                    raw.cmd("SADD", fmt::format("retools:{}:namespaces", kRegion), kNamespace);
                    raw.cmd("SADD", fmt::format("retools:{}:{}:keys", kRegion, kNamespace), key);
                    raw.cmd("GETSET", hkey, "0");
                    raw.cmd("EXEC");
                    auto exec = raw.read(8);
                    long long new_hits =
                        std::stoll(std::string(exec->element[5]->str, exec->element[5]->len));
                    raw.cmd("EVALSHA", sha, "1", lock_key, token);
                    raw.read();
                    raw.cmd("MULTI");
                    raw.cmd("INCRBY", hkey, "0");
                    raw.cmd("INCRBY", miss_key(date, key), std::to_string(new_hits));
                    raw.cmd("EXEC");
                    raw.read(4);
                }
            }),
            {}};
}

std::string load_things(const std::string& term, int limit) {
    std::string out;
    for (int i = 0; i < limit; ++i) out.append(term).append(" ");
    return out;
}

std::vector<std::string> load_list(const std::string& term, int limit) {
    return std::vector<std::string>(static_cast<std::size_t>(limit), term);
}

Run retools_hit_json(const Env&, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kRegion), 3600s);
    auto cached = retools::cache_region(std::string(kRegion), std::string(kJsonNamespace), load_list);
    retools::CacheRegion::statistics = false;
    std::size_t total = 0;
    cached("bunny", 10);
    double seconds = time_it([&] {
        for (std::size_t i = 0; i < count; ++i) total += cached("bunny", 10).size();
    });
    retools::CacheRegion::statistics = true;
    if (total != count * 10) throw std::runtime_error("bad cached value");
    return {seconds, {}};
}

// Each run gets its own wrapper; CacheRegion::statistics is restored after.
template <bool Statistics>
Run retools_hit(const Env&, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kRegion), 3600s);
    auto cached = retools::cache_region(std::string(kRegion), std::string(kNamespace), load_things);
    retools::CacheRegion::statistics = Statistics;
    cached("bunny", 10);
    double seconds = time_it([&] {
        for (std::size_t i = 0; i < count; ++i) cached("bunny", 10);
    });
    retools::CacheRegion::statistics = true;
    return {seconds, {}};
}

// A fresh hit with statistics of a tagged function (CachedFunction::with_tags),
// beside the same hit untagged as its floor: a hit reads no tag (they are
// written with the value), so the two should cost the same.
Run retools_hit_tagged(const Env&, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kRegion), 3600s);
    auto cached =
        retools::cache_region(std::string(kRegion), "bench.load_tagged", load_things)
            .with_tags([](const std::string& term, int) { return std::vector<std::string>{"term:" + term}; });
    cached("bunny", 10);
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) cached("bunny", 10);
            }),
            {}};
}

// A hit with statistics over TLS: the region's own Connection on the TLS port.
Run retools_hit_tls(const Env& env, std::size_t count) {
    retools::Connection tls{env.tls_url};
    retools::CacheRegion::add_region("bench_tls", {.expires = 3600s, .connection = tls});
    auto cached = retools::cache_region("bench_tls", std::string(kNamespace), load_things);
    cached("bunny", 10);
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) cached("bunny", 10);
            }),
            {}};
}

// A fresh hit served by the near cache (CacheRegionOptions::local), statistics
// on: no round trip; the hits reach Redis in the background flush.
Run retools_hit_near(const Env& env, std::size_t count) {
    retools::CacheRegion::add_region(
        "bench_near", {.expires = 3600s, .connection = env.conn, .local = {.max_entries = 1000}});
    auto cached = retools::cache_region("bench_near", std::string(kNamespace), load_things);
    cached("bunny", 10);
    // Until the value is local (the tracking connection subscribes in the background).
    for (int i = 0; i < 5000; ++i) {
        const auto before = env.conn.round_trips();
        cached("bunny", 10);
        if (env.conn.round_trips() == before) break;
        std::this_thread::sleep_for(1ms);
    }
    std::size_t total = 0;
    double seconds = time_it([&] {
        for (std::size_t i = 0; i < count; ++i) total += cached("bunny", 10).size();
    });
    if (total != count * 60) throw std::runtime_error("bad cached value");
    return {seconds, {}};
}

// 100 keys read as 100 single hits, or as one get_many (statistics on, as by default).
template <bool Many>
Run retools_hundred(const Env&, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kRegion), 3600s);
    auto cached = retools::cache_region(std::string(kRegion), std::string(kNamespace), load_things);
    std::vector<std::tuple<std::string, int>> calls;
    for (int i = 0; i < 100; ++i) calls.emplace_back("bunny", i);
    (void)cached.get_many(calls);
    std::size_t total = 0;
    double seconds = time_it([&] {
        for (std::size_t n = 0; n < count; ++n) {
            if constexpr (Many) {
                total += cached.get_many(calls).size();
            } else {
                for (auto& [term, limit] : calls) total += (cached(term, limit), 1);
            }
        }
    });
    if (total != count * 100) throw std::runtime_error("bad cached values");
    return {seconds, {}};
}

// The floor of the two rows above: the same 100 values stored, read with the
// round trips each form needs: 100 MULTI/HGETALL/GET/INCR/EXEC transactions,
// or one pipeline of 100 HMGET created value delta + INCR (what get_many sends).
template <bool Many>
Run raw_hundred(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::vector<std::string> vkeys, hkeys;
    for (int i = 0; i < 100; ++i) {
        const std::string key = fmt::format("bunny {}", i);
        raw_store(raw, key, kNamespace, retools::pickle::dumps(load_things("bunny", i)));
        vkeys.push_back(value_key(key));
        hkeys.push_back(hit_key(retools::detail::local_date(), key));
    }
    return {time_it([&] {
                for (std::size_t n = 0; n < count; ++n) {
                    if constexpr (Many) {
                        for (std::size_t i = 0; i < vkeys.size(); ++i) {
                            raw.cmd("HMGET", vkeys[i], "created", "value", "delta");
                            raw.cmd("INCR", hkeys[i]);
                        }
                        for (std::size_t i = 0; i < vkeys.size(); ++i)
                            if (raw.read()->element[1]->len == 0 || raw.read()->integer <= 0)
                                throw std::runtime_error("floor: no cached value");
                    } else {
                        for (std::size_t i = 0; i < vkeys.size(); ++i) {
                            raw.cmd("MULTI");
                            raw.cmd("HGETALL", vkeys[i]);
                            raw.cmd("GET", hkeys[i]);
                            raw.cmd("INCR", hkeys[i]);
                            raw.cmd("EXEC");
                            if (raw.read(5)->element[0]->elements != 4)
                                throw std::runtime_error("floor: no cached value");
                        }
                    }
                }
            }),
            {}};
}

Run retools_miss(const Env&, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kRegion), 3600s);
    auto cached = retools::cache_region(std::string(kRegion), std::string(kNamespace),
                                        [](const std::string& term, std::size_t i) {
                                            return load_things(term, static_cast<int>(i % 10 + 1));
                                        });
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) cached("bunny", i);
            }),
            {}};
}

}  // namespace

void add_cache_rows(const Env& env, std::vector<Row>& rows) {
    std::size_t n = env.counts.ops;
    RunFn hit_stats = retools_hit<true>, hit_nostats = retools_hit<false>, hit_json = retools_hit_json,
          miss = retools_miss;
    rows.push_back({.id = "cache_hit_stats",
                    .label = "Cache: fresh hit, statistics on",
                    .count = n,
                    .retools = hit_stats,
                    .floor = raw_hit_stats<>,
                    .floor_target = 0.9});
    rows.push_back({.id = "cache_hit_nostats",
                    .label = "Cache: fresh hit, statistics off",
                    .count = n,
                    .retools = hit_nostats,
                    .floor = raw_hit_nostats,
                    .floor_target = 0.9});
    rows.push_back({.id = "cache_hit_tags",
                    .label = "Cache: fresh hit with tags, statistics on (floor: the same hit without tags)",
                    .count = n,
                    .retools = retools_hit_tagged,
                    .floor = hit_stats,
                    .floor_target = 0.95});
    rows.push_back({.id = "cache_hit_json",
                    .label = "Cache: fresh hit, statistics off, list of 10 strings (floor: JSON)",
                    .count = n,
                    .retools = hit_json,
                    .floor = raw_hit_json,
                    .floor_target = 0.9});
    if (!env.tls_url.empty())
        rows.push_back({.id = "cache_hit_tls",
                        .label = "Cache: fresh hit, statistics on, over TLS, floor plain TCP",
                        .count = n,
                        .retools = retools_hit_tls,
                        .floor = raw_hit_stats<>,
                        .floor_target = 0.8});
    if (!env.tls_url.empty())
        rows.push_back({.id = "cache_hit_tls_floor_tls",
                        .label = "Cache: fresh hit, statistics on, over TLS, floor raw TLS",
                        .count = n,
                        .retools = retools_hit_tls,
                        .floor = raw_hit_stats<Transport::tls>,
                        .floor_target = 0.9});
    rows.push_back({.id = "cache_hit_near",
                    .label = "Cache: near-cache hit, statistics on (floor: a Redis hit, raw)",
                    .count = n * 50,
                    .retools = retools_hit_near,
                    .floor = raw_hit_stats<>,
                    .floor_target = 0});  // far above any floor: the target is 1,000,000 hits/s
    rows.push_back({.id = "cache_hit_100_single",
                    .label = "Cache: 100 keys as 100 single hits",
                    .unit = "100 keys/s",
                    .count = std::max<std::size_t>(n / 100, 5),
                    .retools = retools_hundred<false>,
                    .floor = raw_hundred<false>,
                    .floor_target = 0.9});
    rows.push_back({.id = "cache_get_many_100",
                    .label = "Cache: 100 keys as one get_many",
                    .unit = "100 keys/s",
                    .count = std::max<std::size_t>(n / 20, 10),
                    .retools = retools_hundred<true>,
                    .floor = raw_hundred<true>,
                    .floor_target = 0.9});
    rows.push_back({.id = "cache_miss",
                    .label = "Cache: miss + regenerate (statistics on)",
                    .count = n / 2,
                    .retools = miss,
                    .floor = raw_miss,
                    .floor_target = 0.9});
}

}  // namespace bench
