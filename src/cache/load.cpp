// The load path: CacheRegion::load and cached calls, step by step as the
// original does it (PROTOCOL.md, "Cache").
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/lock.hpp>

#include "cache/keys.hpp"
#include "cache/registry.hpp"
#include "core/clock.hpp"

namespace retools {
namespace detail {
namespace {

// The fields of a value hash that load looks at (views into `reply`).
struct StoredValue {
    bool present = false;    // the hash exists (the original's `if result`)
    bool has_value = false;  // it has a `value` field
    double created = 0;      // missing or unreadable `created` counts as very old
    std::string_view value;
};

StoredValue parse_hash(const Reply& reply) {
    StoredValue out;
    const std::size_t n = reply.size();
    out.present = n > 0;
    for (std::size_t i = 0; i + 1 < n; i += 2) {
        std::string_view field = reply[i].view();
        if (field == "value") {
            out.has_value = true;
            out.value = reply[i + 1].view();
        } else if (field == "created") {
            try {
                out.created = reply[i + 1].as_double();
            } catch (const ReplyError&) {
                out.created = 0;
            }
        }
    }
    return out;
}

// A counter's value; a missing or unreadable counter counts as 0 (statistics
// must never break the cache).
long long parse_count(const Reply& reply) {
    if (reply.is_nil() || reply.is_error()) return 0;
    if (reply.is_integer()) return reply.as_integer();
    std::string_view text = reply.view();
    long long value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() ? value : 0;
}

bool is_fresh(const StoredValue& v, double now, const RegionSettings& region) {
    return v.present && now - v.created < to_seconds(region.options.expires);
}

// One pipeline per thread, reused so the hot path does not allocate its
// buffer. Never held across a call into user code (which may use it too).
Pipeline& scratch_pipeline() {
    thread_local Pipeline pipeline;
    pipeline.clear();
    return pipeline;
}

// Renewing a lock every expires/3 makes sense from 30 ms up; below, a renewal
// round trip every few milliseconds would cost more than it protects. Above
// 5 minutes the renewal thread that Lock starts per acquisition would cost
// every miss more than the rare function slower than `expires` (measured:
// a miss at 0.39x the floor instead of 0.98x), so long regions rely on the TTL.
constexpr std::chrono::milliseconds min_renewed_expires{30};
constexpr std::chrono::milliseconds max_renewed_expires{300000};

// A value the function returned but that cannot be stored exactly: say so on
// stderr, at most once a second per process (a hot function must not flood it).
void report_uncached(const RegionSettings& region, std::string_view ns, std::string_view key,
                     std::string_view why) {
    static std::atomic<long long> last_second{0};
    const auto now = static_cast<long long>(unix_now());
    long long last = last_second.load(std::memory_order_relaxed);
    if (now <= last || !last_second.compare_exchange_strong(last, now)) return;
    std::fprintf(stderr,
                 "retools: cache region %s: %s:%s returned a value that cannot be stored (%.*s); "
                 "returned it uncached\n",
                 region.name.c_str(), std::string(ns).c_str(), std::string(key).c_str(),
                 static_cast<int>(why.size()), why.data());
}

}  // namespace

void throw_first_value_timeout(std::string_view region, std::string_view ns, std::string_view key) {
    throw LockTimeout(
        fmt::format("cache region {}: no value for {}:{} and another caller held {} for longer than "
                    "the region's first_value_wait",
                    region, ns, key, cache_keys::lock(region, ns, key)));
}

LoadOutcome cache_load(const RegionSettings& region, std::string_view ns, std::string_view key,
                       Regenerate mode, bool statistics, LoadTarget& target) {
    const Connection& conn = region.connection();
    const std::string value_key = cache_keys::value(region.name, ns, key);
    const std::string day = statistics ? today() : std::string();  // one date for every counter of this call
    const std::string hit_key = statistics ? cache_keys::hits(day, region.name, ns, key) : std::string();

    // 1. Read the value, and count a hit, in one round trip.
    Reply hash;
    long long existing_hits = 0;
    {
        Pipeline& p = scratch_pipeline();
        p.command("HGETALL", value_key);
        if (statistics) {
            p.command("GET", hit_key).command("INCR", hit_key);
            std::vector<Reply> replies = conn.transaction(p);
            hash = replies.at(0);
            existing_hits = parse_count(replies.at(1));
        } else {
            hash = conn.execute_one(p.buffer());
        }
        if (hash.is_error())
            throw ReplyError(
                fmt::format("cache region {}: HGETALL {}: {}", region.name, value_key, hash.error_message()));
    }
    StoredValue stored = parse_hash(hash);

    // 2. Fresh, or any age when not regenerating: serve it (if it decodes).
    const double now = unix_now();
    if (stored.has_value && (mode != Regenerate::when_stale || is_fresh(stored, now, region))) {
        if (target.accept(stored.value)) return LoadOutcome::stored;
        stored.has_value = false;  // written by another codec, or corrupt: a miss
    }
    if (!stored.has_value && mode == Regenerate::never) return LoadOutcome::none;

    // 3. Regenerate under the dogpile lock. With a (decodable) stale value,
    // one attempt: whoever does not get the lock serves the stale value. The
    // lock is renewed while the function runs, so a function slower than
    // `expires` still runs once.
    const bool have_stale = stored.has_value && target.accept(stored.value);
    const auto wait = have_stale ? std::chrono::milliseconds{0} : region.options.first_value_wait;
    Lock lock{cache_keys::lock(region.name, ns, key),
              LockOptions{.expires = std::max(region.options.expires, std::chrono::milliseconds{1}),
                          .timeout = wait,
                          .connection = conn,
                          // Waiters for a first value are answering a request: notice it within 100 ms.
                          .max_retry_delay = std::chrono::milliseconds{100},
                          .auto_renew = region.options.expires >= min_renewed_expires &&
                                        region.options.expires <= max_renewed_expires},
              std::defer_lock};
    if (!lock.try_lock_for(wait)) return have_stale ? LoadOutcome::stored : LoadOutcome::lock_timeout;

    // Did someone else store a value meanwhile? A fresh one is served; so is
    // any one when we had nothing: we waited for that caller's result, which
    // may be older than `expires` already if its function is slow.
    Reply again = conn.command("HGETALL", value_key);
    StoredValue current = parse_hash(again);
    const double created = unix_now();
    if (current.has_value && (is_fresh(current, created, region) || !have_stale) &&
        target.accept(current.value))
        return LoadOutcome::stored;

    std::string bytes, why;
    if (!target.produce(bytes, why)) {  // throws: the lock is released, nothing stored
        lock.unlock();
        report_uncached(region, ns, key, why);
        if (statistics) {
            // Settle the counters as a stored miss would (step 4), with GETSET alone.
            const long long new_hits = parse_count(conn.command("GETSET", hit_key, 0));
            Pipeline& p = scratch_pipeline();
            p.command("INCRBY", hit_key, existing_hits);
            if (new_hits != existing_hits)
                p.command("INCRBY", cache_keys::misses(day, region.name, ns, key), new_hits - existing_hits);
            conn.execute(p);
        }
        return LoadOutcome::produced;
    }

    long long new_hits = 0;
    {
        Pipeline& p = scratch_pipeline();
        const std::string namespaces_key = cache_keys::namespaces(region.name);
        const std::string keyset_key = cache_keys::keyset(region.name, ns);
        const std::string_view stored_keys[] = {value_key, value_key, cache_keys::regions, namespaces_key,
                                                keyset_key};
        p.command("HMSET", value_key, "created", created, "value", bytes);
        p.command("EXPIRE", value_key, static_cast<long long>(region.options.redis_expiration.count()));
        p.command("SADD", cache_keys::regions, region.name);
        p.command("SADD", namespaces_key, ns);
        p.command("SADD", keyset_key, key);
        if (statistics) p.command("GETSET", hit_key, 0);
        std::vector<Reply> replies = conn.transaction(p);
        for (std::size_t i = 0; i < 5; ++i) {  // the value and its tracking sets
            if (replies.at(i).is_error())
                throw ReplyError(fmt::format("cache region {}: storing {}:{} failed at {}: {}", region.name,
                                             ns, key, stored_keys[i], replies[i].error_message()));
        }
        // The original read new_hits from the HMSET reply (always 1); the
        // GETSET reply is what its arithmetic and its own tests mean.
        if (statistics) new_hits = parse_count(replies.back());
    }
    lock.unlock();
    if (!statistics) return LoadOutcome::produced;

    // 4. Every hit counted since our GET (ours included) becomes a miss; the
    // hits from before are put back.
    const long long misses = new_hits - existing_hits;
    if (misses != 0) {
        Pipeline& p = scratch_pipeline();
        p.command("INCRBY", hit_key, existing_hits);
        p.command("INCRBY", cache_keys::misses(day, region.name, ns, key), misses);
        conn.transaction(p);  // a broken counter does not fail the call that computed the value
    } else {
        Pipeline& p = scratch_pipeline();
        p.command("INCRBY", hit_key, existing_hits);
        conn.execute(p);
    }
    return LoadOutcome::produced;
}

}  // namespace detail

std::optional<std::string> CacheRegion::load(std::string_view region, std::string_view ns,
                                             std::string_view key, bool regenerate,
                                             const std::function<std::string()>& callable,
                                             std::optional<bool> statistics) {
    struct Bytes final : detail::LoadTarget {
        Bytes(const std::function<std::string()>& call, ValueFormat format) : call_(call), format_(format) {}
        bool accept(std::string_view stored) override {
            auto decoded = detail::decode_value<std::string>(format_, stored);
            if (!decoded) return false;
            value = std::move(*decoded);
            return true;
        }
        bool produce(std::string& bytes, std::string& why) override {
            value = call_();
            return detail::encode_value<std::string>(format_, value, bytes, why);
        }
        std::string value;
        const std::function<std::string()>& call_;
        ValueFormat format_;
    };
    auto settings = detail::find_region(region);
    Bytes target{callable, settings->options.value_format};
    auto mode = regenerate && callable ? detail::Regenerate::when_stale : detail::Regenerate::never;
    switch (detail::cache_load(*settings, ns, key, mode, statistics.value_or(CacheRegion::statistics.load()),
                               target)) {
        case detail::LoadOutcome::stored:
        case detail::LoadOutcome::produced:
            return std::move(target.value);
        case detail::LoadOutcome::none:
        case detail::LoadOutcome::lock_timeout:
            break;
    }
    return std::nullopt;
}

void CacheRegion::invalidate(std::string_view region) {
    invalidate_region(region);
}

}  // namespace retools
