// The load path: CacheRegion::load and cached calls, step by step as the
// original does it (PROTOCOL.md, "Cache").
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/lock.hpp>
#include <retools/script.hpp>

#include "cache/keys.hpp"
#include "cache/near_cache.hpp"
#include "cache/refresh.hpp"
#include "cache/registry.hpp"
#include "client/errors.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace detail {
namespace {

// The fields of a value hash that load looks at (views into `reply`).
struct StoredValue {
    bool present = false;    // the hash exists (the original's `if result`)
    bool has_value = false;  // it has a `value` field
    double created = 0;      // missing or unreadable `created` counts as very old
    double delta = 0;        // seconds the last computation took (early refresh); 0 when unknown
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
        } else if (field == "delta") {
            try {
                out.delta = std::max(reply[i + 1].as_double(), 0.0);
            } catch (const ReplyError&) {
                out.delta = 0;
            }
        }
    }
    return out;
}

// The same from `HMGET <key> created value delta` (what get_many reads: half
// the reply objects of HGETALL, and less work for the server). A hash with
// none of the three fields counts as absent.
StoredValue parse_fields(const Reply& reply) {
    StoredValue out;
    if (reply.size() != 3) return out;
    auto number = [](const Reply& r) {
        try {
            return r.as_double();
        } catch (const ReplyError&) {
            return 0.0;
        }
    };
    const Reply& created = reply[0];
    const Reply& value = reply[1];
    const Reply& delta = reply[2];
    out.present = !created.is_nil() || !value.is_nil() || !delta.is_nil();
    if (!created.is_nil()) out.created = number(created);
    if (!value.is_nil()) {
        out.has_value = true;
        out.value = value.view();
    }
    if (!delta.is_nil()) out.delta = std::max(number(delta), 0.0);
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

// XFetch: recompute a fresh value early with a probability that grows as its
// expiry nears, scaled by how long it takes to compute (delta) and beta.
bool wants_early_refresh(const StoredValue& v, double now, const RegionSettings& region) {
    const double beta = region.options.early_refresh_beta;
    if (!(beta > 0) || !(v.delta > 0)) return false;
    double u = static_cast<double>(random_u64() >> 11) * 0x1p-53;  // uniform in [0, 1)
    u = std::max(u, 0x1p-53);                                      // ln(0) is -inf
    return now - v.delta * beta * std::log(u) >= v.created + to_seconds(region.options.expires);
}

// The commands that store one produced value (the original's store
// transaction, without the statistics), plus `delta` when early refresh is on.
// The tracking sets' SADDs go to `tracking`: `p` itself in the original's
// layout; on a cluster a pipeline of their own (they are in other slots).
void add_store_commands(Pipeline& p, Pipeline& tracking, const RegionSettings& region, std::string_view ns,
                        std::string_view key, const std::string& value_key, double created,
                        const std::string& bytes, double delta) {
    if (region.options.early_refresh_beta > 0)
        p.command("HMSET", value_key, "created", created, "value", bytes, "delta", delta);
    else
        p.command("HMSET", value_key, "created", created, "value", bytes);
    p.command("EXPIRE", value_key, static_cast<long long>(region.options.redis_expiration.count()));
    tracking.command("SADD", cache_keys::regions, region.name);
    tracking.command("SADD", cache_keys::namespaces(region.name), ns);
    tracking.command("SADD", cache_keys::keyset(region.name, ns), key);
}

// Sends the tracking commands a cluster keeps apart (a split pipeline).
void execute_tracking(const Connection& conn, const Pipeline& tracking, const RegionSettings& region) {
    if (tracking.empty()) return;
    std::vector<Reply> replies = conn.execute(tracking);
    for (const Reply& reply : replies)
        if (reply.is_error())
            throw ReplyError(fmt::format("cache region {}: adding to its tracking sets failed: {}",
                                         region.name, reply.error_message()));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Queues an early refresh of a value read as created at `seen_created`. It
// runs under the dogpile lock (one attempt: whoever holds it is computing
// already, in this process or another) and gives up when someone stored a
// newer value meanwhile. It changes no statistics: no caller waited for it.
void schedule_early_refresh(const RegionSettings& region, std::string_view ns, std::string_view key,
                            double seen_created, std::function<bool(std::string&, std::string&)> produce) {
    if (!produce) return;
    std::string lock_key = cache_keys::lock(region.name, ns, key, region.connection().is_cluster());
    auto task = [settings = region, ns = std::string(ns), key = std::string(key), lock_key, seen_created,
                 produce = std::move(produce)]() {
        const Connection& conn = settings.connection();
        Lock lock{lock_key,
                  LockOptions{.expires = std::max(settings.options.expires, std::chrono::milliseconds{1}),
                              .timeout = std::chrono::milliseconds{0},
                              .connection = conn,
                              .auto_renew = settings.options.expires >= std::chrono::milliseconds{30}},
                  std::defer_lock};
        if (!lock.try_lock()) return;
        const std::string value_key = cache_keys::value(settings.name, ns, key, conn.is_cluster());
        StoredValue current = parse_hash(conn.command("HGETALL", value_key));
        if (current.present && current.created > seen_created) return;  // refreshed by someone else
        std::string bytes, why;
        const auto start = std::chrono::steady_clock::now();
        if (!produce(bytes, why)) return;
        const double delta = seconds_since(start);
        Pipeline p, tracking;
        add_store_commands(p, conn.is_cluster() ? tracking : p, settings, ns, key, value_key, unix_now(),
                           bytes, delta);
        conn.transaction(p);
        execute_tracking(conn, tracking, settings);
    };
    (void)submit_refresh(lock_key, std::move(task));
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
// 5 minutes, starting the process's renewal thread (it ends whenever no lock
// is held, so that forks stay single-threaded) would cost every sequential
// miss more than the rare function slower than `expires` (measured with a
// thread per acquisition: a miss at 0.39x the floor instead of 0.98x), so
// long regions rely on the TTL.
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
    auto settings = lookup_region(region);
    const bool cluster = settings && settings->connection().is_cluster();
    throw LockTimeout(
        fmt::format("cache region {}: no value for {}:{} and another caller held {} for longer than "
                    "the region's first_value_wait",
                    region, ns, key, cache_keys::lock(region, ns, key, cluster)));
}

namespace {

// A value served from the near cache: no round trip; its hit is counted
// locally and reaches Redis with the next flush. False when there is no local
// copy to serve (then it is dropped if it was stale or not decodable).
bool serve_local(NearCache& near, const RegionSettings& region, std::string_view ns, std::string_view key,
                 const std::string& value_key, Regenerate mode, bool statistics, LoadTarget& target) {
    auto local = near.find(value_key);
    if (!local) return false;
    const double now = unix_now();
    StoredValue v{.present = true,
                  .has_value = true,
                  .created = local->created,
                  .delta = local->delta,
                  .value = *local->value};
    if ((mode != Regenerate::when_stale || is_fresh(v, now, region)) && target.accept(v.value)) {
        if (statistics) near.count_hit(today(), value_key);
        if (mode == Regenerate::when_stale && wants_early_refresh(v, now, region))
            schedule_early_refresh(region, ns, key, v.created, target.refresher());
        return true;
    }
    near.invalidate(value_key);
    return false;
}

// Keeps what a read from Redis found, if it is worth serving locally.
void fill_local(NearRead& read, const StoredValue& stored, Regenerate mode, const RegionSettings& region) {
    if (stored.has_value && (mode != Regenerate::when_stale || is_fresh(stored, unix_now(), region)))
        read.fill(stored.value, stored.created, stored.delta);
}

}  // namespace

LoadOutcome cache_load(const RegionSettings& region, std::string_view ns, std::string_view key,
                       Regenerate mode, bool statistics, LoadTarget& target) {
    const Connection& conn = region.connection();
    const bool cluster = conn.is_cluster();
    const std::string value_key = cache_keys::value(region.name, ns, key, cluster);
    NearCache* near = near_cache(region, conn);
    if (near && serve_local(*near, region, ns, key, value_key, mode, statistics, target))
        return LoadOutcome::stored;
    std::optional<NearRead> near_read;  // begun before the read: see cache/near_cache.hpp
    if (near) near_read.emplace(*near, value_key);
    const std::string day = statistics ? today() : std::string();  // one date for every counter of this call
    const std::string hit_key =
        statistics ? cache_keys::hits(day, region.name, ns, key, cluster) : std::string();

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
    if (near_read) {
        fill_local(*near_read, stored, mode, region);
        near_read.reset();
    }

    // 2. Fresh, or any age when not regenerating: serve it (if it decodes).
    const double now = unix_now();
    if (stored.has_value && (mode != Regenerate::when_stale || is_fresh(stored, now, region))) {
        if (target.accept(stored.value)) {
            if (mode == Regenerate::when_stale && wants_early_refresh(stored, now, region))
                schedule_early_refresh(region, ns, key, stored.created, target.refresher());
            return LoadOutcome::stored;
        }
        stored.has_value = false;  // written by another codec, or corrupt: a miss
    }
    if (!stored.has_value && mode == Regenerate::never) return LoadOutcome::none;

    // 3. Regenerate under the dogpile lock. With a (decodable) stale value,
    // one attempt: whoever does not get the lock serves the stale value. The
    // lock is renewed while the function runs, so a function slower than
    // `expires` still runs once.
    const bool have_stale = stored.has_value && target.accept(stored.value);
    const auto wait = have_stale ? std::chrono::milliseconds{0} : region.options.first_value_wait;
    Lock lock{cache_keys::lock(region.name, ns, key, cluster),
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
    const auto started = std::chrono::steady_clock::now();
    const bool storable = target.produce(bytes, why);  // throws: the lock is released, nothing stored
    const double delta = seconds_since(started);
    if (!storable) {
        lock.unlock();
        report_uncached(region, ns, key, why);
        if (statistics) {
            // Settle the counters as a stored miss would (step 4), with GETSET alone.
            const long long new_hits = parse_count(conn.command("GETSET", hit_key, 0));
            Pipeline& p = scratch_pipeline();
            p.command("INCRBY", hit_key, existing_hits);
            if (new_hits != existing_hits)
                p.command("INCRBY", cache_keys::misses(day, region.name, ns, key, cluster),
                          new_hits - existing_hits);
            conn.execute(p);
        }
        return LoadOutcome::produced;
    }

    long long new_hits = 0;
    {
        Pipeline& p = scratch_pipeline();
        Pipeline tracking;  // used on a cluster only
        const std::string namespaces_key = cache_keys::namespaces(region.name);
        const std::string keyset_key = cache_keys::keyset(region.name, ns);
        const std::string_view stored_keys[] = {value_key, value_key, cache_keys::regions, namespaces_key,
                                                keyset_key};
        add_store_commands(p, cluster ? tracking : p, region, ns, key, value_key, created, bytes, delta);
        if (statistics) p.command("GETSET", hit_key, 0);
        std::vector<Reply> replies = conn.transaction(p);
        if (cluster) {
            std::vector<Reply> tracked = conn.execute(tracking);
            replies.insert(replies.begin() + 2, tracked.begin(), tracked.end());  // as in one transaction
        }
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
        p.command("INCRBY", cache_keys::misses(day, region.name, ns, key, cluster), misses);
        conn.transaction(p);  // a broken counter does not fail the call that computed the value
    } else {
        Pipeline& p = scratch_pipeline();
        p.command("INCRBY", hit_key, existing_hits);
        conn.execute(p);
    }
    return LoadOutcome::produced;
}

namespace {

// Settles the statistics of every produced key as step 4 does for one, in the
// store's round trip. KEYS = hit key 1, miss key 1, hit key 2, ...; ARGV[i] =
// the hits key i had before this call read it.
const Script& settle_many_script() {
    static const Script script{R"lua(
for i = 1, #ARGV do
  local hit, miss, existing = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[i])
  local new_hits = tonumber(redis.call('GETSET', hit, 0)) or 0
  redis.call('INCRBY', hit, existing)
  if new_hits ~= existing then redis.call('INCRBY', miss, new_hits - existing) end
end
return 1
)lua"};
    return script;
}

// Takes the dogpile locks of many keys in one round trip, as Lock takes one
// (`SET key token NX PX ttl`; Python retools' SETNX + EXPIRE, never without a
// TTL). KEYS = the lock keys; ARGV[1] = TTL in ms, ARGV[i + 1] = token of key i.
// Returns one 1 (taken) or 0 per key.
const Script& acquire_many_script() {
    static const Script script{R"lua(
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, ARGV[i + 1], 'NX', 'PX', ARGV[1]) and 1 or 0
end
return out
)lua"};
    return script;
}

// Releases them as Lock::release does: compare-and-delete, and when a Lock
// waits (`<key>:waiting`), one push to `<key>:signal` (kept ARGV[1] ms) that
// wakes it at once. KEYS = lock key, signal, waiting mark of key 1, of key 2...;
// ARGV[1] = TTL of a signal in ms, ARGV[i + 1] = token of key i.
const Script& release_many_script() {
    static const Script script{R"lua(
for i = 1, #ARGV - 1 do
  local key, signal, waiting = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('DEL', key)
    if redis.call('EXISTS', waiting) == 1 then
      redis.call('DEL', signal)
      redis.call('LPUSH', signal, '1')
      redis.call('PEXPIRE', signal, ARGV[1])
    end
  end
end
return 1
)lua"};
    return script;
}

constexpr long long signal_ttl_ms = 1000;  // as a Lock's release signal

// The dogpile locks a get_many took in one round trip. Released with the
// store (same round trip) or, if a function threw, when this goes away. On a
// cluster each lock is its own script call (the locks are in many slots) in
// one split pipeline.
class BatchLocks {
public:
    explicit BatchLocks(const Connection& conn) : conn_(conn), cluster_(conn.is_cluster()) {}
    ~BatchLocks() {
        if (keys_.empty()) return;
        try {
            Pipeline p;
            add_release(p);
            (void)conn_.execute(p);
        } catch (...) {
            // The keys expire on their own after `expires`.
        }
    }
    BatchLocks(const BatchLocks&) = delete;
    BatchLocks& operator=(const BatchLocks&) = delete;

    // Tries every key once; true for each taken.
    std::vector<bool> try_lock(const std::vector<std::string>& keys, std::chrono::milliseconds ttl) {
        std::vector<std::string> tokens;
        tokens.reserve(keys.size());
        for (std::size_t i = 0; i < keys.size(); ++i) tokens.push_back(random_token());
        std::vector<bool> taken(keys.size(), false);
        std::vector<Reply> each;
        if (cluster_) {
            Pipeline p;
            for (std::size_t i = 0; i < keys.size(); ++i)
                p.command("EVAL", acquire_many_script().source(), 1, keys[i], ttl.count(), tokens[i]);
            each = conn_.execute(p);
            detail::check_replies(each, p);
        }
        Reply r = cluster_ ? Reply{} : acquire_many_script().run(conn_, keys, ttl.count(), tokens);
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if ((cluster_ ? each[i][0] : r[i]).as_integer() != 1) continue;
            taken[i] = true;
            keys_.push_back(keys[i]);
            tokens_.push_back(std::move(tokens[i]));
        }
        return taken;
    }
    // Appends the release of every held lock to `p` (they count as released).
    void add_release(Pipeline& p) {
        if (keys_.empty()) return;
        if (cluster_) {
            while (!keys_.empty()) add_release_of(p, std::string(keys_.back()));
            return;
        }
        std::vector<std::string> script_keys;
        script_keys.reserve(keys_.size() * 3);
        for (const std::string& k : keys_) {
            script_keys.push_back(k);
            script_keys.push_back(k + ":signal");
            script_keys.push_back(k + ":waiting");
        }
        p.command("EVAL", release_many_script().source(), script_keys.size(), script_keys, signal_ttl_ms,
                  tokens_);
        keys_.clear();
        tokens_.clear();
    }

    // Appends the release of `key` alone to `p`, if held (it counts as
    // released). A cluster's lock key has a hash tag, so `<key>:signal` is
    // the name Lock gives it there too.
    void add_release_of(Pipeline& p, const std::string& key) {
        auto at = std::find(keys_.begin(), keys_.end(), key);
        if (at == keys_.end()) return;
        const auto i = at - keys_.begin();
        p.command("EVAL", release_many_script().source(), 3, key, key + ":signal", key + ":waiting",
                  signal_ttl_ms, tokens_[static_cast<std::size_t>(i)]);
        keys_.erase(at);
        tokens_.erase(tokens_.begin() + i);
    }

private:
    const Connection& conn_;
    const bool cluster_;
    std::vector<std::string> keys_, tokens_;
};

}  // namespace

std::vector<LoadOutcome> cache_load_many(const RegionSettings& region, std::string_view ns,
                                         const std::vector<std::string>& keys, Regenerate mode,
                                         bool statistics, const std::vector<LoadTarget*>& targets,
                                         std::size_t threads) {
    const std::size_t n = keys.size();
    std::vector<LoadOutcome> outcomes(n, LoadOutcome::none);
    if (n == 0) return outcomes;
    const Connection& conn = region.connection();
    const bool cluster = conn.is_cluster();
    std::vector<std::string> value_keys(n);
    for (std::size_t i = 0; i < n; ++i) value_keys[i] = cache_keys::value(region.name, ns, keys[i], cluster);

    // 0. What the near cache holds costs no round trip.
    NearCache* near = near_cache(region, conn);
    std::vector<std::size_t> remote;  // the keys read from Redis
    remote.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (near && serve_local(*near, region, ns, keys[i], value_keys[i], mode, statistics, *targets[i]))
            outcomes[i] = LoadOutcome::stored;
        else
            remote.push_back(i);
    }
    if (remote.empty()) return outcomes;
    std::vector<std::unique_ptr<NearRead>> near_reads(n);
    if (near)
        for (std::size_t i : remote) near_reads[i] = std::make_unique<NearRead>(*near, value_keys[i]);

    const std::string day = statistics ? today() : std::string();
    std::vector<std::string> hit_keys(statistics ? n : 0);
    if (statistics)
        for (std::size_t i : remote) hit_keys[i] = cache_keys::hits(day, region.name, ns, keys[i], cluster);

    // 1. Read every value, and count a hit for each, in one round trip. A
    // single call reads the counter (GET) and increments it (INCR) in a
    // transaction; INCR alone returns the same (the old count + 1) atomically.
    std::vector<Reply> replies;
    {
        Pipeline p;
        p.reserve(remote.size() * (statistics ? 96 : 48));
        for (std::size_t i : remote) {
            p.command("HMGET", value_keys[i], "created", "value", "delta");
            if (statistics) p.command("INCR", hit_keys[i]);
        }
        replies = conn.execute(p);
    }
    const std::size_t stride = statistics ? 2 : 1;
    std::vector<long long> existing_hits(n, 0);
    std::vector<bool> have_stale(n, false);
    std::vector<std::size_t> todo;
    const double now = unix_now();
    for (std::size_t j = 0; j < remote.size(); ++j) {
        const std::size_t i = remote[j];
        const Reply& hash = replies.at(j * stride);
        if (hash.is_error())
            throw ReplyError(fmt::format("cache region {}: HMGET {}: {}", region.name, value_keys[i],
                                         hash.error_message()));
        if (statistics) {
            const Reply& incr = replies.at(j * stride + 1);
            existing_hits[i] = incr.is_integer() ? incr.as_integer() - 1 : 0;  // not a number: as GET's 0
        }
        StoredValue stored = parse_fields(hash);
        if (near_reads[i]) {
            fill_local(*near_reads[i], stored, mode, region);
            near_reads[i].reset();
        }
        // 2. Fresh, or any age when not regenerating: served.
        if (stored.has_value && (mode != Regenerate::when_stale || is_fresh(stored, now, region))) {
            if (targets[i]->accept(stored.value)) {
                outcomes[i] = LoadOutcome::stored;
                if (mode == Regenerate::when_stale && wants_early_refresh(stored, now, region))
                    schedule_early_refresh(region, ns, keys[i], stored.created, targets[i]->refresher());
                continue;
            }
            stored.has_value = false;
        }
        if (!stored.has_value && mode == Regenerate::never) continue;
        have_stale[i] = stored.has_value && targets[i]->accept(stored.value);
        todo.push_back(i);
    }
    if (todo.empty()) return outcomes;

    // 3. Each key to regenerate under its own dogpile lock: all taken in one
    // round trip (one attempt each). Who does not get one serves its stale
    // value, or, with nothing stored, waits as a single call waits.
    const auto lock_ttl = std::max(region.options.expires, std::chrono::milliseconds{1});
    BatchLocks batch{conn};
    std::vector<std::optional<Lock>> waited(n);  // locks taken after waiting, released one by one
    std::vector<std::size_t> produce;
    {
        std::vector<std::string> lock_keys;
        lock_keys.reserve(todo.size());
        for (std::size_t i : todo) lock_keys.push_back(cache_keys::lock(region.name, ns, keys[i], cluster));
        std::vector<bool> taken = batch.try_lock(lock_keys, lock_ttl);
        for (std::size_t j = 0; j < todo.size(); ++j) {
            const std::size_t i = todo[j];
            if (taken[j]) {
                produce.push_back(i);
                continue;
            }
            if (have_stale[i]) {
                outcomes[i] = LoadOutcome::stored;  // someone is regenerating: serve the stale value
                continue;
            }
            const auto wait = region.options.first_value_wait;
            Lock lock{lock_keys[j],
                      LockOptions{.expires = lock_ttl,
                                  .timeout = wait,
                                  .connection = conn,
                                  .max_retry_delay = std::chrono::milliseconds{100}},
                      std::defer_lock};
            if (!lock.try_lock_for(wait)) {
                outcomes[i] = LoadOutcome::lock_timeout;
                continue;
            }
            // We waited for another caller: take its result.
            StoredValue current = parse_hash(conn.command("HGETALL", value_keys[i]));
            if (current.has_value && targets[i]->accept(current.value)) {
                outcomes[i] = LoadOutcome::stored;
                continue;
            }
            waited[i].emplace(std::move(lock));
            produce.push_back(i);
        }
    }
    std::sort(produce.begin(), produce.end());  // called in the order asked

    // 4. Produce them: in order on this thread (the function is called as N
    // single calls would call it), or shared by up to `threads` threads. An
    // exception propagates (the first, once every computation has ended); the
    // locks are released and nothing is stored.
    if (produce.empty()) return outcomes;
    std::vector<std::string> bytes(n), why(n);
    std::vector<double> deltas(n, 0);
    std::vector<char> storable(n, 0);  // not vector<bool>: threads write neighbouring elements
    auto compute = [&](std::size_t i) {
        const auto started = std::chrono::steady_clock::now();
        storable[i] = targets[i]->produce(bytes[i], why[i]) ? 1 : 0;
        deltas[i] = seconds_since(started);
    };
    const std::size_t workers = std::min(threads, produce.size());
    if (workers <= 1) {
        for (std::size_t i : produce) compute(i);
    } else {
        std::atomic<std::size_t> next{0};
        std::mutex failure_mutex;
        std::exception_ptr failure;
        auto work = [&] {
            for (std::size_t j; (j = next.fetch_add(1)) < produce.size();) {
                try {
                    compute(produce[j]);
                } catch (...) {
                    std::lock_guard guard(failure_mutex);
                    if (!failure) failure = std::current_exception();
                    next = produce.size();  // stop taking new ones
                }
            }
        };
        std::vector<std::thread> helpers;
        helpers.reserve(workers - 1);
        try {
            for (std::size_t t = 1; t < workers; ++t) helpers.emplace_back(work);
        } catch (const std::system_error&) {
            // No more threads now: the ones started and this one do it.
        }
        work();
        for (auto& h : helpers) h.join();
        if (failure) std::rethrow_exception(failure);
    }
    for (std::size_t i : produce) outcomes[i] = LoadOutcome::produced;

    // 5. Store them all, settle their statistics and release the locks, in one round trip.
    auto check_stored = [&](const std::vector<Reply>& stored, const std::vector<std::size_t>& stored_at) {
        for (std::size_t at : stored_at)
            for (std::size_t j = at; j < at + 5; ++j)
                if (stored.at(j).is_error())
                    throw ReplyError(fmt::format("cache region {}: storing a value of {} failed: {}",
                                                 region.name, ns, stored[j].error_message()));
    };
    if (cluster) {
        // A transaction per key (its value, counters and lock share a slot),
        // then the tracking sets in one split pipeline.
        const double created = unix_now();
        Pipeline tracking;
        for (std::size_t i : produce) {
            Pipeline p;
            if (storable[i])
                add_store_commands(p, tracking, region, ns, keys[i], value_keys[i], created, bytes[i],
                                   deltas[i]);
            if (statistics)
                p.command("EVAL", settle_many_script().source(), 2, hit_keys[i],
                          cache_keys::misses(day, region.name, ns, keys[i], cluster), existing_hits[i]);
            batch.add_release_of(p, cache_keys::lock(region.name, ns, keys[i], cluster));
            if (p.empty()) continue;
            std::vector<Reply> stored = conn.transaction(p);
            for (std::size_t j = 0; storable[i] && j < 2; ++j)
                if (stored.at(j).is_error())
                    throw ReplyError(fmt::format("cache region {}: storing {} failed: {}", region.name,
                                                 value_keys[i], stored[j].error_message()));
        }
        execute_tracking(conn, tracking, region);
    } else {
        Pipeline p;
        const double created = unix_now();
        std::vector<std::size_t> stored_at;  // index of each HMSET reply
        for (std::size_t i : produce) {
            if (!storable[i]) continue;
            stored_at.push_back(p.size());
            add_store_commands(p, p, region, ns, keys[i], value_keys[i], created, bytes[i], deltas[i]);
        }
        if (statistics) {
            std::vector<std::string> settle_keys, existing;
            for (std::size_t i : produce) {
                settle_keys.push_back(hit_keys[i]);
                settle_keys.push_back(cache_keys::misses(day, region.name, ns, keys[i], cluster));
                existing.push_back(std::to_string(existing_hits[i]));
            }
            p.command("EVAL", settle_many_script().source(), settle_keys.size(), settle_keys, existing);
        }
        batch.add_release(p);
        std::vector<Reply> stored = conn.transaction(p);
        check_stored(stored, stored_at);
    }
    for (std::size_t i : produce) {
        if (waited[i]) waited[i]->unlock();
        if (!storable[i]) report_uncached(region, ns, keys[i], why[i]);
    }
    return outcomes;
}

}  // namespace detail

std::optional<std::string> CacheRegion::load(std::string_view region, std::string_view ns,
                                             std::string_view key, bool regenerate,
                                             const std::function<std::string()>& callable,
                                             std::optional<bool> count_statistics) {
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
        std::function<bool(std::string&, std::string&)> refresher() const override {
            return [call = call_, format = format_](std::string& bytes, std::string& why) {
                return detail::encode_value<std::string>(format, call(), bytes, why);
            };
        }
        std::string value;
        const std::function<std::string()>& call_;
        ValueFormat format_;
    };
    auto settings = detail::find_region(region);
    Bytes target{callable, settings->options.value_format};
    auto mode = regenerate && callable ? detail::Regenerate::when_stale : detail::Regenerate::never;
    switch (detail::cache_load(*settings, ns, key, mode,
                               count_statistics.value_or(CacheRegion::statistics.load()), target)) {
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
