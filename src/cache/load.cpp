// The load path: CacheRegion::load, cached calls and get_many, one protocol
// for one key or many (the original's "Cache" steps). Each key goes through
// the state machine of cache/load_fsm.hpp; this file does its round trips,
// batched over the keys of a call.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/lock.hpp>
#include <retools/log.hpp>
#include <retools/script.hpp>

#include "cache/keys.hpp"
#include "cache/load_fsm.hpp"
#include "cache/near_cache.hpp"
#include "cache/refresh.hpp"
#include "cache/registry.hpp"
#include "cache/resilience.hpp"
#include "cache/single_flight.hpp"
#include "client/connection_access.hpp"
#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "lock/dogpile.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace detail {
namespace {

// The fields of `HMGET <key> created value delta` (views into `reply`). A
// hash with none of the three fields counts as absent; an unreadable
// `created` as very old, an unreadable `delta` as unknown.
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

// Uniform in (0, 1]: the early-refresh draw.
double uniform_draw() {
    return static_cast<double>((random_u64() >> 11) + 1) * 0x1p-53;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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

// Adds a stored value to the sets of its tags. KEYS, ARGV and the reply:
// src/cache/lua/tag.lua. Never destroyed: a background computation (soft
// timeout) may store while the process exits.
const Script& tag_script() {
    static const Script& script = *new Script{std::string(lua::cache_tag)};
    return script;
}

// The tag sets' update of one stored value: one script call on one node
// (EVAL: it may run in a transaction), one per tag on a cluster (each set is
// in a slot of its own). Appended to the store's tracking pipeline.
void add_tag_commands(Pipeline& p, const RegionSettings& region, const std::string& value_key,
                      const std::vector<std::string>& tags) {
    if (tags.empty()) return;
    const auto ttl = static_cast<long long>(region.options.redis_expiration.count());
    if (region.topology().per_call_slots()) {
        for (const std::string& tag : tags)
            p.command("EVAL", tag_script().source(), 1, cache_keys::tag(tag), value_key, ttl);
        return;
    }
    std::vector<std::string> sets;
    sets.reserve(tags.size());
    for (const std::string& tag : tags) sets.push_back(cache_keys::tag(tag));
    p.command("EVAL", tag_script().source(), sets.size(), sets, value_key, ttl);
}

// The commands that store one produced value (the original's store
// transaction, without the statistics), plus `delta` when early refresh is on.
// The tracking sets' SADDs and the tag sets' update go to `tracking`: `p`
// itself in the original's layout; on a cluster a pipeline of their own
// (they are in other slots).
void add_store_commands(Pipeline& p, Pipeline& tracking, const RegionSettings& region, std::string_view ns,
                        std::string_view key, const std::string& value_key, double created,
                        const std::string& bytes, double delta, const std::vector<std::string>& tags) {
    if (region.options.early_refresh_beta > 0)
        p.command("HMSET", value_key, "created", created, "value", bytes, "delta", delta);
    else
        p.command("HMSET", value_key, "created", created, "value", bytes);
    p.command("EXPIRE", value_key, static_cast<long long>(region.options.redis_expiration.count()));
    tracking.command("SADD", cache_keys::regions, region.name);
    tracking.command("SADD", cache_keys::namespaces(region.name), ns);
    tracking.command("SADD", cache_keys::keyset(region.name, ns), key);
    add_tag_commands(tracking, region, value_key, tags);
}

// Queues an early refresh of a value read as created at `seen_created`. It
// runs under the dogpile lock (one attempt: whoever holds it is computing
// already, in this process or another) and gives up when someone stored a
// newer value meanwhile. It changes no statistics: no caller waited for it.
void schedule_early_refresh(const RegionSettings& region, std::string_view ns, std::string_view key,
                            double seen_created, std::function<bool(std::string&, std::string&)> produce,
                            std::vector<std::string> tags) {
    if (!produce) return;
    std::string lock_key = region.topology().lock(region.name, ns, key);
    auto task = [settings = region, ns = std::string(ns), key = std::string(key), lock_key, seen_created,
                 produce = std::move(produce), tags = std::move(tags)]() {
        const Connection& conn = settings.connection();
        Lock lock{lock_key, dogpile_lock_options(conn, settings.options.expires, std::chrono::milliseconds{0}),
                  std::defer_lock};
        if (!lock.try_lock()) return;
        const std::string value_key = settings.topology().value(settings.name, ns, key);
        StoredValue current = parse_fields(conn.command("HMGET", value_key, "created", "value", "delta"));
        if (current.present && current.created > seen_created) return;  // refreshed by someone else
        std::string bytes, why;
        const auto start = std::chrono::steady_clock::now();
        if (!produce(bytes, why)) return;
        const double delta = seconds_since(start);
        Pipeline p, tracking;
        add_store_commands(p, settings.topology().tracking(p, tracking), settings, ns, key, value_key,
                           unix_now(), bytes, delta, tags);
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

// A value the function returned but that cannot be stored exactly: say so (a
// warning to the log handler), at most once a second per process (a hot
// function must not flood it).
void report_uncached(const RegionSettings& region, std::string_view ns, std::string_view key,
                     std::string_view why) {
    static std::atomic<long long> last_second{0};
    const auto now = static_cast<long long>(unix_now());
    long long last = last_second.load(std::memory_order_relaxed);
    if (now <= last || !last_second.compare_exchange_strong(last, now)) return;
    detail::log(LogLevel::warning,
                fmt::format("retools: cache region {}: {}:{} returned a value that cannot be stored ({}); "
                            "returned it uncached",
                            region.name, ns, key, why));
}

}  // namespace

void throw_first_value_timeout(std::string_view region, std::string_view ns, std::string_view key) {
    auto settings = lookup_region(region);
    const bool cluster = settings && settings->topology().per_call_slots();
    throw LockTimeout(
        fmt::format("cache region {}: no value for {}:{} and another caller held {} for longer than "
                    "the region's first_value_wait",
                    region, ns, key, cache_keys::lock(region, ns, key, cluster)));
}

namespace {
// Settles the statistics of every produced key, in the store's round trip.
// KEYS, ARGV and the reply: src/cache/lua/settle.lua.
// Never destroyed: a background computation (soft timeout) may store while
// the process exits.
const Script& settle_script() {
    static const Script& script = *new Script{std::string(lua::cache_settle)};
    return script;
}

// One key of a load: its state machine and what its round trips need.
struct KeyJob {
    std::string_view key;
    LoadTarget* target = nullptr;
    KeyLoad fsm{Regenerate::never, 0, 0};
    LoadStep step = LoadStep::none;
    std::string value_key, hit_key, lock_key;
    long long existing_hits = 0;
    std::optional<NearRead> near_read;  // begun before the read: see cache/near_cache.hpp
    bool storable = false;
    double delta = 0;
    std::string bytes, why;
    // `created` of the stored value the target last accepted (0: none): the
    // stale value fail-safe may serve when the function throws.
    double accepted_created = 0;
    bool served_stale = false;  // fail-safe served it: nothing to store
    std::vector<std::string> tags;  // of the value to store (CachedFunction::with_tags)
};

// What every key of one load shares.
struct LoadContext {
    const RegionSettings& region;
    std::string_view ns;
    const Connection& conn;
    bool cluster;
    Regenerate mode;
    bool statistics;
    std::string day;  // one date for every counter of this call
    NearCache* near;
};

// Fail-safe: whether the stale value the target holds is young enough to
// serve instead of the function's exception.
bool fail_safe_usable(const LoadContext& c, const KeyJob& job) {
    const auto max_age = c.region.options.fail_safe_max_age;
    return max_age.count() > 0 && job.accepted_created > 0 &&
           unix_now() - job.accepted_created <= to_seconds(max_age);
}

// A stale key whose function failed a moment ago in this process: served
// stale again without calling the function (see cache/resilience.hpp).
bool throttled_stale(const LoadContext& c, const KeyJob& job) {
    return fail_safe_usable(c, job) && fail_safe_throttled(job.value_key);
}

// The function threw `e`: serve the stale value instead when fail-safe allows.
bool serve_stale_instead(const LoadContext& c, KeyJob& job, const std::exception& e) {
    if (!fail_safe_usable(c, job)) return false;
    job.served_stale = true;
    job.storable = false;
    note_fail_safe(c.region, job.value_key, e.what());
    return true;
}

// The counters' TTL in seconds (0: none).
long long retention_of(const LoadContext& c) {
    return static_cast<long long>(c.region.options.stats_retention.count());
}

bool decodes(KeyJob& job, const StoredValue& v) {
    if (!v.has_value || !job.target->accept(v.value)) return false;
    job.accepted_created = std::max(v.created, 1e-9);
    return true;
}

// A served value: queue its early refresh if the draw says so.
void after_serve(const LoadContext& c, KeyJob& job, double created) {
    if (job.fsm.refresh_early())
        schedule_early_refresh(c.region, c.ns, job.key, created, job.target->refresher(), job.target->tags());
}

// Step 0: values in the near cache cost no round trip; their hit is counted
// locally and reaches Redis with the next flush. A local copy that is not
// served (stale, or not decodable) is dropped. True when served.
bool serve_local(const LoadContext& c, KeyJob& job) {
    auto local = c.near->find(job.value_key);
    if (!local) return false;
    const double now = unix_now();
    StoredValue v{.present = true, .has_value = true, .created = local->created, .delta = local->delta,
                  .value = *local->value};
    const double u = c.region.options.early_refresh_beta > 0 ? uniform_draw() : 1.0;
    KeyLoad fsm{c.mode, to_seconds(c.region.options.expires), c.region.options.early_refresh_beta};
    if (fsm.read(v, decodes(job, v), now, u) == LoadStep::serve) {
        if (c.statistics) c.near->count_hit(today(), job.value_key);
        job.fsm = fsm;
        after_serve(c, job, v.created);
        return true;
    }
    c.near->invalidate(job.value_key);
    return false;
}

// Step 1: read every value, and count a hit for each, in one round trip: a
// pipeline of `HMGET <value> created value delta` and `INCR <hit counter>`
// (INCR returns the old count + 1 atomically). Sets each key's next step.
void read_values(const LoadContext& c, std::span<KeyJob*> jobs) {
    Pipeline& p = scratch_pipeline();
    p.reserve(jobs.size() * (c.statistics ? 96 : 48));
    const long long retention = retention_of(c);
    for (KeyJob* job : jobs) {
        p.command("HMGET", job->value_key, "created", "value", "delta");
        if (c.statistics) p.command("INCR", job->hit_key);
        if (c.statistics && retention > 0) p.command("EXPIRE", job->hit_key, retention);
    }
    std::vector<Reply> replies = c.conn.execute(p);
    const std::size_t stride = c.statistics ? (retention > 0 ? 3 : 2) : 1;
    const double now = unix_now();
    const double expires = to_seconds(c.region.options.expires);
    const double beta = c.region.options.early_refresh_beta;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        KeyJob& job = *jobs[j];
        const Reply& hash = replies.at(j * stride);
        if (hash.is_error())
            throw ReplyError(fmt::format("cache region {}: HMGET {}: {}", c.region.name, job.value_key,
                                         hash.error_message()));
        if (c.statistics) {
            const Reply& incr = replies.at(j * stride + 1);
            job.existing_hits = incr.is_integer() ? incr.as_integer() - 1 : 0;  // not a number: as 0
        }
        StoredValue stored = parse_fields(hash);
        job.fsm = KeyLoad{c.mode, expires, beta};
        if (job.near_read) {
            if (stored.has_value && (c.mode != Regenerate::when_stale || job.fsm.fresh(stored, now)))
                job.near_read->fill(stored.value, stored.created, stored.delta);
            job.near_read.reset();
        }
        job.step = job.fsm.read(stored, decodes(job, stored), now, beta > 0 ? uniform_draw() : 1.0);
        if (job.step == LoadStep::try_lock && throttled_stale(c, job)) job.step = LoadStep::serve;
        if (job.step == LoadStep::serve) after_serve(c, job, stored.created);
    }
}

// Step 2: one attempt at the dogpile lock of every key that needs it, with
// the value read again right after each attempt, in one round trip (one more,
// once, when the server does not know the lock script yet). Then a key whose
// lock is busy and that has nothing to serve waits for it, as a Lock does.
void take_locks(const LoadContext& c, std::span<KeyJob*> jobs, DogpileLocks& locks) {
    std::vector<std::string> lock_keys;
    lock_keys.reserve(jobs.size());
    for (KeyJob* job : jobs) lock_keys.push_back(job->lock_key);
    std::vector<Reply> replies;
    std::vector<bool> taken;
    for (bool source_needed = true; source_needed;) {
        Pipeline p;
        locks.add_try_lock(p, lock_keys);
        const std::size_t reads_at = p.size();
        for (KeyJob* job : jobs) p.command("HMGET", job->value_key, "created", "value", "delta");
        replies = c.conn.execute(p);
        taken = locks.taken(replies, 0, source_needed);
        if (source_needed) locks.send_source();
        if (!source_needed)
            for (std::size_t j = 0; j < jobs.size(); ++j) {
                KeyJob& job = *jobs[j];
                const StoredValue again = taken[j] ? parse_fields(replies.at(reads_at + j)) : StoredValue{};
                job.step = job.fsm.locked(taken[j], again, taken[j] && decodes(job, again), unix_now());
            }
    }
    for (KeyJob* job : jobs) {
        if (job->step != LoadStep::wait) continue;
        const auto wait = c.region.options.first_value_wait;
        Lock lock{job->lock_key, dogpile_lock_options(c.conn, c.region.options.expires, wait), std::defer_lock};
        const bool got = lock.try_lock_for(wait);
        StoredValue again;
        Reply reply;
        if (got) {
            reply = c.conn.command("HMGET", job->value_key, "created", "value", "delta");
            again = parse_fields(reply);
            locks.adopt(std::move(lock));  // released with the others
        }
        job->step = job->fsm.waited(got, got && decodes(*job, again));
    }
}

// Step 3: call the functions of the keys to produce, in order on this thread
// (as the same single calls would), or shared by up to `threads` threads. An
// exception propagates (the first, once every computation has ended): the
// locks are released and nothing is stored.
void produce_values(const LoadContext& c, std::span<KeyJob*> jobs, std::size_t threads) {
    auto compute = [&c](KeyJob& job) {
        const auto started = std::chrono::steady_clock::now();
        try {
            job.storable = job.target->produce(job.bytes, job.why);
        } catch (const std::exception& e) {
            if (!serve_stale_instead(c, job, e)) throw;
        }
        job.delta = seconds_since(started);
    };
    const std::size_t workers = std::min(threads, jobs.size());
    if (workers <= 1) {
        for (KeyJob* job : jobs) compute(*job);
        return;
    }
    std::atomic<std::size_t> next{0};
    std::mutex failure_mutex;
    std::exception_ptr failure;
    auto work = [&] {
        for (std::size_t j; (j = next.fetch_add(1)) < jobs.size();) {
            try {
                compute(*jobs[j]);
            } catch (...) {
                std::lock_guard guard(failure_mutex);
                if (!failure) failure = std::current_exception();
                next = jobs.size();  // stop taking new ones
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

void check_stored(const LoadContext& c, const KeyJob& job, const std::vector<Reply>& replies, std::size_t at) {
    const std::string stored_keys[] = {job.value_key, job.value_key, std::string(cache_keys::regions),
                                       cache_keys::namespaces(c.region.name),
                                       cache_keys::keyset(c.region.name, c.ns)};
    for (std::size_t j = 0; j < 5; ++j)
        if (replies.at(at + j).is_error())
            throw ReplyError(fmt::format("cache region {}: storing {}:{} failed at {}: {}", c.region.name, c.ns,
                                         job.key, stored_keys[j], replies[at + j].error_message()));
    if (!job.tags.empty() && replies.at(at + 5).is_error())
        throw ReplyError(fmt::format("cache region {}: storing {}:{} failed at its tag sets ({} ...): {}",
                                     c.region.name, c.ns, job.key, cache_keys::tag(job.tags.front()),
                                     replies[at + 5].error_message()));
}

// Step 4 on a cluster: a transaction per key (its value, counters and lock
// share a slot), then the tracking sets in one split pipeline.
void store_values_cluster(const LoadContext& c, std::span<KeyJob*> jobs, DogpileLocks& locks) {
    const double created = unix_now();
    Pipeline tracking;
    std::vector<std::size_t> tracked_at;
    for (KeyJob* job : jobs) {
        Pipeline p;
        if (job->storable && !job->served_stale) {
            tracked_at.push_back(tracking.size());
            add_store_commands(p, tracking, c.region, c.ns, job->key, job->value_key, created, job->bytes,
                               job->delta, job->tags);
        }
        if (c.statistics)
            p.command("EVAL", settle_script().source(), 2, job->hit_key,
                      cache_keys::misses(c.day, c.region.name, c.ns, job->key, true), retention_of(c),
                      job->existing_hits);
        locks.add_release_of(p, job->lock_key);
        std::vector<Reply> stored = c.conn.transaction(p);
        for (std::size_t j = 0; job->storable && !job->served_stale && j < 2; ++j)
            if (stored.at(j).is_error())
                throw ReplyError(fmt::format("cache region {}: storing {} failed: {}", c.region.name,
                                             job->value_key, stored[j].error_message()));
    }
    execute_tracking(c.conn, tracking, c.region);
}

// Step 4: store every produced value, settle their statistics and release
// every lock, in one round trip (the original's store transaction).
void store_values(const LoadContext& c, std::span<KeyJob*> jobs, DogpileLocks& locks) {
    if (c.cluster) {
        store_values_cluster(c, jobs, locks);
    } else {
        Pipeline& p = scratch_pipeline();
        const double created = unix_now();
        std::vector<std::size_t> stored_at;  // index of each HMSET reply
        for (KeyJob* job : jobs) {
            if (!job->storable || job->served_stale) continue;
            stored_at.push_back(p.size());
            add_store_commands(p, p, c.region, c.ns, job->key, job->value_key, created, job->bytes,
                               job->delta, job->tags);
        }
        if (c.statistics) {
            std::vector<std::string> settle_keys, existing;
            for (KeyJob* job : jobs) {
                settle_keys.push_back(job->hit_key);
                settle_keys.push_back(cache_keys::misses(c.day, c.region.name, c.ns, job->key, false));
                existing.push_back(std::to_string(job->existing_hits));
            }
            p.command("EVAL", settle_script().source(), settle_keys.size(), settle_keys, retention_of(c),
                      existing);
        }
        locks.add_release(p);
        std::vector<Reply> stored = c.conn.transaction(p);
        std::size_t j = 0;
        for (KeyJob* job : jobs)
            if (job->storable && !job->served_stale) check_stored(c, *job, stored, stored_at[j++]);
    }
    for (KeyJob* job : jobs)
        if (!job->storable && !job->served_stale) report_uncached(c.region, c.ns, job->key, job->why);
}

// Soft timeout (CacheRegionOptions::soft_timeout): a key with a stale value
// is computed on a thread of its own, which also stores the value and
// releases the lock; its caller waits for it up to the soft timeout, then
// serves the stale value. What the two share:
struct SoftResult {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    bool abandoned = false;  // the caller served the stale value and left
    bool storable = false;
    std::string bytes;
    std::exception_ptr failure;
};

// Everything the background computation uses, owned by it: it may outlive
// the caller, the cached function object and main() (then it is abandoned
// with the process; library state it touches is shared or never destroyed).
struct SoftTask {
    SoftTask(const LoadContext& c, const KeyJob& job)
        : settings(c.region),
          conn(c.conn),
          locks(conn, c.region.options.expires),
          ns(c.ns),
          key(job.key),
          value_key(job.value_key),
          hit_key(job.hit_key),
          lock_key(job.lock_key),
          day(c.day),
          statistics(c.statistics),
          existing_hits(job.existing_hits),
          tags(job.tags),
          produce(job.target->refresher()) {}
    RegionSettings settings;
    Connection conn;
    DogpileLocks locks;  // the key's lock, handed over by the caller (and renewed)
    std::string ns, key, value_key, hit_key, lock_key, day;
    bool statistics;
    long long existing_hits;
    std::vector<std::string> tags;
    std::function<bool(std::string&, std::string&)> produce;
    std::shared_ptr<SoftResult> result = std::make_shared<SoftResult>();
};

// Tells the caller (if it still waits) how the computation ended; true when
// it had stopped waiting.
bool publish(SoftResult& result, std::exception_ptr failure, bool storable, std::string& bytes) {
    bool abandoned = false;
    {
        std::lock_guard guard(result.mutex);
        result.done = true;
        result.failure = std::move(failure);
        result.storable = storable;
        abandoned = result.abandoned;
        if (storable && !abandoned) result.bytes = std::move(bytes);
    }
    result.finished.notify_all();
    return abandoned;
}

// The background thread: compute, store (releasing the lock in the same
// round trip, as a caller would), then tell the caller, so that a value it
// takes in time is already the stored one.
void finish_in_background(SoftTask& task) {
    const auto started = std::chrono::steady_clock::now();
    KeyJob job;
    try {
        job.storable = task.produce(job.bytes, job.why);
    } catch (...) {
        Pipeline release;
        task.locks.add_release(release);
        try {
            (void)task.conn.execute(release);
        } catch (const std::exception&) {
            // The lock expires after its TTL.
        }
        if (publish(*task.result, std::current_exception(), false, job.bytes))
            detail::log(LogLevel::warning,
                        fmt::format("retools: cache region {}: {}:{} failed in the background after the soft "
                                    "timeout; nothing stored",
                                    task.settings.name, task.ns, task.key));
        return;
    }
    job.delta = seconds_since(started);
    job.key = task.key;
    job.value_key = task.value_key;
    job.hit_key = task.hit_key;
    job.lock_key = task.lock_key;
    job.existing_hits = task.existing_hits;
    job.tags = std::move(task.tags);
    const LoadContext c{.region = task.settings,
                        .ns = task.ns,
                        .conn = task.conn,
                        .cluster = task.settings.topology().per_call_slots(),
                        .mode = Regenerate::when_stale,
                        .statistics = task.statistics,
                        .day = task.day,
                        .near = nullptr};
    KeyJob* one[] = {&job};
    try {
        store_values(c, one, task.locks);
    } catch (const std::exception& e) {
        detail::log(
            LogLevel::warning,
            fmt::format("retools: cache region {}: storing {}:{} computed in the background failed: {}",
                        task.settings.name, task.ns, task.key, e.what()));
    }
    (void)publish(*task.result, nullptr, job.storable, job.bytes);
}

// Starts the computation of `job` in the background, its lock handed over;
// nullptr when it cannot run there (no self-contained producer, no thread):
// then the caller computes it as without a soft timeout.
std::shared_ptr<SoftResult> start_in_background(const LoadContext& c, KeyJob& job, DogpileLocks& locks) {
    auto task = std::make_shared<SoftTask>(c, job);
    if (!task->produce || !locks.hand_over(job.lock_key, task->locks)) return nullptr;
    try {
        std::thread([task] { finish_in_background(*task); }).detach();
    } catch (const std::system_error&) {
        task->locks.hand_over(job.lock_key, locks);
        return nullptr;
    }
    return task->result;
}

// A background computation threw `failure` within the soft timeout: serve the
// stale value instead when fail-safe allows (logged and counted as fail-safe).
bool fail_safe_after_soft_wait(const LoadContext& c, KeyJob& job, const std::exception_ptr& failure) {
    try {
        std::rethrow_exception(failure);
    } catch (const std::exception& e) {
        return serve_stale_instead(c, job, e);
    } catch (...) {
        return false;  // not a std::exception: it propagates, as from produce_values
    }
}

// The keys of `todo` with a stale value go to the background and are waited
// for together, up to the soft timeout; each ends served (stale, or the new
// value when it came in time). `todo` keeps the keys to compute here.
void produce_soft(const LoadContext& c, std::vector<KeyJob*>& todo, DogpileLocks& locks) {
    std::vector<std::pair<KeyJob*, std::shared_ptr<SoftResult>>> started;
    std::vector<KeyJob*> here;
    const double soft_timeout = to_seconds(c.region.options.soft_timeout);
    for (KeyJob* job : todo) {
        auto result = soft_timeout_applies(soft_timeout, c.mode, job->fsm.have_stale())
                          ? start_in_background(c, *job, locks)
                          : nullptr;
        if (result)
            started.emplace_back(job, std::move(result));
        else
            here.push_back(job);
    }
    todo.swap(here);
    const auto deadline = std::chrono::steady_clock::now() + c.region.options.soft_timeout;
    std::exception_ptr failure;
    for (auto& [job, result] : started) {
        std::unique_lock guard(result->mutex);
        const bool done = result->finished.wait_until(guard, deadline, [&r = *result] { return r.done; });
        if (!done) result->abandoned = true;  // the computation goes on and stores without us
        const bool failed = done && result->failure;
        const bool fail_safe = failed && fail_safe_after_soft_wait(c, *job, result->failure);
        // The new value was stored by the background; one that cannot be
        // stored is not kept there either (reported by it).
        const bool new_value = done && !failed && result->storable && job->target->accept(result->bytes);
        switch (after_soft_wait(done, failed, fail_safe, new_value)) {
            case SoftStep::serve_new:
                job->step = LoadStep::produce;
                break;
            case SoftStep::serve_stale:
                job->step = LoadStep::serve;
                break;
            case SoftStep::rethrow:
                job->step = LoadStep::serve;
                if (!failure) failure = result->failure;
                break;
        }
    }
    if (failure) std::rethrow_exception(failure);
}

// Fail-open: Redis failed before the values of `jobs` were settled, so each
// one not yet served is computed without the cache (shared by the callers of
// its key in this process), and nothing is stored.
void call_through(const LoadContext& c, std::span<KeyJob*> jobs, const ConnectionError& error) {
    std::size_t computed = 0;
    for (KeyJob* job : jobs) {
        if (job->step == LoadStep::serve) continue;  // served before Redis failed
        if (c.mode == Regenerate::never) {
            job->step = LoadStep::none;
            continue;
        }
        ++computed;
        job->storable = produce_once(job->value_key, *job->target, job->bytes, job->why);
        job->step = LoadStep::produce;
    }
    note_bypass(c.region, error, computed);
}

// Runs one Redis step of the load; when Redis fails and the region fails
// open, answers `jobs` without the cache and returns false.
template <class Step>
bool redis_step(const LoadContext& c, std::span<KeyJob*> jobs, Step&& step) {
    try {
        step();
        return true;
    } catch (const ConnectionError& e) {
        if (c.region.options.on_redis_error != RedisErrorPolicy::call_through) throw;
        call_through(c, jobs, e);
        return false;
    }
}

LoadOutcome outcome_of(LoadStep step) {
    switch (step) {
        case LoadStep::serve: return LoadOutcome::stored;
        case LoadStep::produce: return LoadOutcome::produced;
        case LoadStep::timeout: return LoadOutcome::lock_timeout;
        default: return LoadOutcome::none;
    }
}

// The keys whose step is `step`, in the order asked.
void select(std::span<KeyJob> all, LoadStep step, std::vector<KeyJob*>& out) {
    out.clear();
    for (KeyJob& job : all)
        if (job.step == step) out.push_back(&job);
}

// The whole protocol for `jobs` (keys and targets set); each job's step ends
// as its outcome.
void load_keys(const LoadContext& c, std::span<KeyJob> jobs, std::size_t threads) {
    const bool cluster = c.cluster;
    std::vector<KeyJob*> todo;
    todo.reserve(jobs.size());
    for (KeyJob& job : jobs) {
        job.value_key = cache_keys::value(c.region.name, c.ns, job.key, cluster);
        if (c.near && serve_local(c, job)) {
            job.step = LoadStep::serve;
            continue;
        }
        job.step = LoadStep::try_lock;  // read below
        todo.push_back(&job);
    }
    if (todo.empty()) return;
    for (KeyJob* job : todo) {
        if (c.near) job->near_read.emplace(*c.near, job->value_key);
        if (c.statistics) job->hit_key = cache_keys::hits(c.day, c.region.name, c.ns, job->key, cluster);
    }
    if (!redis_step(c, todo, [&] { read_values(c, todo); })) return;
    select(jobs, LoadStep::try_lock, todo);
    if (todo.empty()) return;

    DogpileLocks locks{c.conn, c.region.options.expires};
    for (KeyJob* job : todo) job->lock_key = cache_keys::lock(c.region.name, c.ns, job->key, cluster);
    if (!redis_step(c, todo, [&] { take_locks(c, todo, locks); })) return;
    select(jobs, LoadStep::produce, todo);
    if (todo.empty()) return;  // locks taken for values found meanwhile: released by `locks`
    for (KeyJob* job : todo) job->tags = job->target->tags();
    if (c.region.options.soft_timeout.count() > 0 && c.mode == Regenerate::when_stale) {
        produce_soft(c, todo, locks);
        if (todo.empty()) return;
    }
    produce_values(c, todo, threads);
    try {
        store_values(c, todo, locks);
    } catch (const ConnectionError& e) {
        if (c.region.options.on_redis_error != RedisErrorPolicy::call_through) throw;
        note_store_skipped(c.region, e);  // the values are returned; their locks expire
    }
}

LoadContext context(const RegionSettings& region, std::string_view ns, Regenerate mode, bool statistics) {
    const Connection& conn = region.connection();
    return LoadContext{.region = region,
                       .ns = ns,
                       .conn = conn,
                       .cluster = region.topology().per_call_slots(),
                       .mode = mode,
                       .statistics = statistics,
                       .day = statistics ? today() : std::string(),
                       .near = near_cache(region, conn)};
}

}  // namespace

LoadOutcome cache_load(const RegionSettings& region, std::string_view ns, std::string_view key,
                       Regenerate mode, bool statistics, LoadTarget& target) {
    KeyJob job;
    job.key = key;
    job.target = &target;
    load_keys(context(region, ns, mode, statistics), std::span<KeyJob>(&job, 1), 1);
    return outcome_of(job.step);
}

std::vector<LoadOutcome> cache_load_many(const RegionSettings& region, std::string_view ns,
                                         const std::vector<std::string>& keys, Regenerate mode,
                                         bool statistics, const std::vector<LoadTarget*>& targets,
                                         std::size_t threads) {
    std::vector<LoadOutcome> outcomes(keys.size(), LoadOutcome::none);
    if (keys.empty()) return outcomes;
    std::vector<KeyJob> jobs(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        jobs[i].key = keys[i];
        jobs[i].target = targets[i];
    }
    load_keys(context(region, ns, mode, statistics), jobs, threads);
    for (std::size_t i = 0; i < keys.size(); ++i) outcomes[i] = outcome_of(jobs[i].step);
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
