// The region registry and CacheRegion::load, step by step as the original does it.
#include <algorithm>
#include <charconv>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/lock.hpp>

#include "cache/keys.hpp"
#include "core/clock.hpp"

namespace retools {
namespace detail {
namespace {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct Registry {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<const RegionSettings>, StringHash, std::equal_to<>>
        regions;
};

Registry& registry() {
    static Registry instance;
    return instance;
}

std::shared_ptr<const RegionSettings> lookup(std::string_view name) {
    Registry& r = registry();
    std::shared_lock lock(r.mutex);
    auto it = r.regions.find(name);
    return it == r.regions.end() ? nullptr : it->second;
}

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

}  // namespace

std::shared_ptr<const RegionSettings> find_region(std::string_view name) {
    auto region = lookup(name);
    if (!region) throw CacheConfigurationError(fmt::format("Cache region not configured: {}", name));
    return region;
}

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
    // one attempt: whoever does not get the lock serves the stale value.
    const bool have_stale = stored.has_value && target.accept(stored.value);
    const auto wait = have_stale ? std::chrono::milliseconds{0} : region.options.first_value_wait;
    Lock lock{cache_keys::lock(region.name, ns, key),
              LockOptions{.expires = std::max(region.options.expires, std::chrono::milliseconds{1}),
                          .timeout = wait,
                          .connection = conn,
                          // Waiters for a first value are answering a request: notice it within 100 ms.
                          .max_retry_delay = std::chrono::milliseconds{100}},
              std::defer_lock};
    if (!lock.try_lock_for(wait)) return have_stale ? LoadOutcome::stored : LoadOutcome::lock_timeout;

    // Did someone else store a fresh value meanwhile?
    Reply again = conn.command("HGETALL", value_key);
    StoredValue current = parse_hash(again);
    const double created = unix_now();
    if (current.has_value && is_fresh(current, created, region) && target.accept(current.value))
        return LoadOutcome::stored;

    std::string bytes = target.produce();  // throws: the lock is released, nothing stored

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

CacheKey::CacheKey(std::string_view region, std::string_view ns, std::string_view key, std::string_view today)
    : lock_key(detail::cache_keys::lock(region, ns, key)),
      redis_key(detail::cache_keys::value(region, ns, key)),
      redis_keyset(detail::cache_keys::keyset(region, ns)) {
    const std::string day = today.empty() ? detail::today() : std::string(today);
    redis_hit_key = detail::cache_keys::hits(day, region, ns, key);
    redis_miss_key = detail::cache_keys::misses(day, region, ns, key);
}

void CacheRegion::add_region(std::string name, std::chrono::milliseconds expires,
                             std::chrono::seconds redis_expiration) {
    add_region(std::move(name), CacheRegionOptions{.expires = expires, .redis_expiration = redis_expiration});
}

void CacheRegion::add_region(std::string name, CacheRegionOptions options) {
    if (name.empty()) throw CacheConfigurationError("cache region name must not be empty");
    if (options.expires.count() < 0)
        throw CacheConfigurationError(fmt::format("cache region {}: expires must not be negative", name));
    if (options.redis_expiration.count() < 1)
        throw CacheConfigurationError(
            fmt::format("cache region {}: redis_expiration must be at least 1 s", name));
    if (options.first_value_wait.count() < 0)
        throw CacheConfigurationError(
            fmt::format("cache region {}: first_value_wait must not be negative", name));
    auto settings =
        std::make_shared<const detail::RegionSettings>(detail::RegionSettings{name, std::move(options)});
    auto& r = detail::registry();
    std::unique_lock lock(r.mutex);
    r.regions.insert_or_assign(std::move(name), std::move(settings));
}

bool CacheRegion::has_region(std::string_view name) {
    return detail::lookup(name) != nullptr;
}

std::optional<CacheRegionOptions> CacheRegion::region(std::string_view name) {
    auto settings = detail::lookup(name);
    if (!settings) return std::nullopt;
    return settings->options;
}

std::vector<std::string> CacheRegion::region_names() {
    std::vector<std::string> names;
    {
        auto& r = detail::registry();
        std::shared_lock lock(r.mutex);
        for (const auto& [name, settings] : r.regions) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::optional<std::string> CacheRegion::load(std::string_view region, std::string_view ns,
                                             std::string_view key, bool regenerate,
                                             const std::function<std::string()>& callable,
                                             std::optional<bool> statistics) {
    struct Bytes final : detail::LoadTarget {
        explicit Bytes(const std::function<std::string()>& call) : call_(call) {}
        bool accept(std::string_view stored) override {
            value.assign(stored);
            return true;
        }
        std::string produce() override {
            value = call_();
            return value;
        }
        std::string value;
        const std::function<std::string()>& call_;
    };
    auto settings = detail::find_region(region);
    Bytes target{callable};
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
