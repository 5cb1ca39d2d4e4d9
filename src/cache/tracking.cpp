// The tracking connection and the statistics flusher of near caches (see
// cache/tracking.hpp), and how a region finds its near cache.
#include "cache/tracking.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <retools/detail/command_buffer.hpp>
#include <retools/errors.hpp>
#include <retools/log.hpp>

#include "cache/near_cache.hpp"
#include "cache/registry.hpp"
#include "client/link.hpp"
#include "client/tls.hpp"

namespace retools::detail {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How often the tracking thread looks up from its socket (for a new region's
// prefix), pings the server, and how long an unanswered ping means a dead link.
constexpr auto poll_interval = 100ms;
constexpr auto ping_interval = 1s;
constexpr auto ping_deadline = 3s;
// How often local hit counts are added to Redis (documented: within about 0.5 s).
constexpr auto flush_interval = 250ms;

// Bumped in a forked child: the parent's trackers have no thread there, and
// their mutexes may have been held at fork time; the child starts anew.
std::atomic<unsigned> fork_generation{0};
[[maybe_unused]] const int atfork_registered =
    pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });

// Among prefixes, the ones not covered by a shorter one (BCAST refuses
// overlapping prefixes on one connection).
std::vector<std::string> minimal_prefixes(std::vector<std::string> all) {
    std::sort(all.begin(), all.end());
    std::vector<std::string> out;
    for (auto& p : all)
        if (out.empty() || !p.starts_with(out.back())) out.push_back(std::move(p));
    return out;
}

class Tracker {
public:
    explicit Tracker(Connection conn) : conn_(conn), stats_(stats_options(conn.options())) {
        if (conn_.options().tls) tls_ = std::make_unique<TlsContext>(*conn_.options().tls);
        std::thread([this] { track(); }).detach();
        std::thread([this] { flush_loop(); }).detach();
    }

    void attach(NearCache* cache) {
        std::lock_guard lock(mutex_);
        if (std::find(caches_.begin(), caches_.end(), cache) != caches_.end()) return;
        caches_.push_back(cache);
        resubscribe_.store(true, std::memory_order_release);  // register its prefix
    }

    bool active() const {
        return active_.load(std::memory_order_acquire) && !resubscribe_.load(std::memory_order_acquire);
    }

    void flush() {
        std::lock_guard flushing(flush_mutex_);
        std::vector<NearCache*> caches = snapshot();
        Pipeline p;
        std::vector<std::pair<NearCache*, std::vector<std::pair<std::string, long long>>>> taken;
        for (NearCache* c : caches) {
            auto hits = c->take_hits();
            if (hits.empty()) continue;
            const long long ttl = c->stats_retention().count();
            for (const auto& [key, n] : hits) {
                p.command("INCRBY", key, n);
                if (ttl > 0) p.command("EXPIRE", key, ttl);
            }
            taken.emplace_back(c, std::move(hits));
        }
        if (p.empty()) return;
        try {
            (void)stats_.execute(p);  // one pipeline; a counter of another type fails alone
        } catch (const Error&) {
            for (auto& [c, hits] : taken) c->restore_hits(hits);  // the next flush tries again
        }
    }

private:
    static ConnectionOptions stats_options(ConnectionOptions o) {
        o.pool_size = 1;
        return o;
    }

    std::vector<NearCache*> snapshot() {
        std::lock_guard lock(mutex_);
        return caches_;
    }

    void set_all(const std::vector<NearCache*>& caches, bool active) {
        for (NearCache* c : caches) c->set_active(active);
    }

    Reply call(Link& link, const CommandBuffer& b, std::string_view what) {
        Reply r = link.call(b.data(), conn_.options().command_timeout);
        if (r.is_error())
            throw ReplyError(fmt::format("near cache tracking: {}: {}", what, r.error_message()));
        return r;
    }

    // One tracking session: returns when a new prefix must be registered;
    // throws when the link fails.
    void session(std::vector<NearCache*>& caches) {
        const ConnectionOptions& options = conn_.options();
        auto link = Link::open(options, tls_.get());
        CommandBuffer b;
        b.add("CLIENT", "SETNAME", "retools-tracking");
        call(*link, b, "CLIENT SETNAME");
        b.clear();
        b.add("CLIENT", "ID");
        const long long id = call(*link, b, "CLIENT ID").as_integer();
        resubscribe_.store(false, std::memory_order_release);
        caches = snapshot();
        std::vector<std::string> prefixes;
        for (NearCache* c : caches) prefixes.push_back(c->prefix());
        std::vector<std::string> args;
        for (auto& prefix : minimal_prefixes(std::move(prefixes))) {
            args.emplace_back("PREFIX");
            args.push_back(std::move(prefix));
        }
        b.clear();
        b.add("CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST", args);
        call(*link, b, "CLIENT TRACKING");
        b.clear();
        b.add("SUBSCRIBE", "__redis__:invalidate");
        call(*link, b, "SUBSCRIBE __redis__:invalidate");
        // From here every write of a tracked key reaches us: local copies may be kept.
        set_all(caches, true);
        active_.store(true, std::memory_order_release);

        auto last_ping = Clock::now();
        auto last_pong = last_ping;
        CommandBuffer ping;
        ping.add("PING");
        for (;;) {
            if (resubscribe_.load(std::memory_order_acquire)) return;
            const auto now = Clock::now();
            if (now - last_pong > ping_deadline)
                throw ConnectionError(
                    fmt::format("near cache tracking: {} stopped answering PING", options.describe()));
            if (now - last_ping >= ping_interval) {
                std::string_view request = ping.data();
                link->send({&request, 1}, 1, deadline_after(options.command_timeout),
                           options.command_timeout.count());
                last_ping = now;
            }
            Reply m;
            try {
                m = link->receive(deadline_after(poll_interval), poll_interval.count());
            } catch (const TimeoutError&) {
                continue;  // nothing arrived: the reader's state is intact
            }
            if (!m.is_array() || m.size() < 2) continue;
            const std::string_view kind = m[0].view();
            if (kind == "pong") {
                last_pong = Clock::now();
            } else if (kind == "message" && m.size() >= 3) {
                const Reply& keys = m[2];
                if (keys.is_nil()) {
                    for (NearCache* c : caches) c->clear();  // FLUSHDB / FLUSHALL
                } else if (keys.is_array()) {
                    for (std::size_t i = 0; i < keys.size(); ++i) invalidate(caches, keys[i].view());
                } else {
                    invalidate(caches, keys.view());
                }
            }
        }
    }

    static void invalidate(const std::vector<NearCache*>& caches, std::string_view key) {
        for (NearCache* c : caches)
            if (key.starts_with(c->prefix())) c->invalidate(key);
    }

    void track() {
        auto backoff = 50ms;
        for (;;) {
            std::vector<NearCache*> caches;
            bool failed = false;
            try {
                session(caches);
            } catch (const ReplyError& e) {
                // Refused (an ACL without CLIENT or SUBSCRIBE, Redis < 6): say so once; calls go to Redis.
                failed = true;
                if (!refused_reported_) {
                    refused_reported_ = true;
                    detail::log(LogLevel::warning, fmt::format("retools: near cache off for {}: {}",
                                                               conn_.options().describe(), e.what()));
                }
            } catch (const std::exception&) {
                failed = true;
            }
            // Invalidations may have been missed from here on: drop every local copy.
            active_.store(false, std::memory_order_release);
            set_all(snapshot(), false);
            if (failed) {
                std::this_thread::sleep_for(backoff);
                backoff = std::min<std::chrono::milliseconds>(backoff * 2, 1s);
            } else {
                backoff = 50ms;
            }
        }
    }

    void flush_loop() {
        for (;;) {
            std::this_thread::sleep_for(flush_interval);
            flush();
        }
    }

    const Connection conn_;  // keeps its pool (and the address of its options) alive
    Connection stats_;       // a connection of its own: flushes add no round trip to conn_
    std::unique_ptr<TlsContext> tls_;
    std::mutex mutex_;
    std::vector<NearCache*> caches_;
    std::atomic<bool> resubscribe_{true};
    std::atomic<bool> active_{false};
    std::mutex flush_mutex_;
    bool refused_reported_ = false;  // tracking thread only
};

// Everything of one process. Never destroyed: its threads run until exit.
struct NearState {
    NearState(unsigned g, NearState* before) : generation(g), parent(before) {}
    const unsigned generation;
    NearState* const parent;  // the parent process's, kept reachable (and untouched) after fork
    std::mutex mutex;
    std::map<std::pair<std::string, const void*>, std::unique_ptr<NearCache>> caches;
    std::map<const void*, std::unique_ptr<Tracker>> trackers;
};

std::atomic<NearState*> current_state{nullptr};

NearState& state() {
    const unsigned generation = fork_generation.load(std::memory_order_relaxed);
    for (;;) {
        NearState* s = current_state.load(std::memory_order_acquire);
        if (s && s->generation == generation) return *s;
        auto* fresh = new NearState(generation, s);
        // The previous state (the parent's, after fork) is left as it is.
        if (current_state.compare_exchange_strong(s, fresh, std::memory_order_acq_rel)) return *fresh;
        delete fresh;
    }
}

}  // namespace

struct NearSlot::Binding {
    NearCache* cache;  // null: no near cache through this connection
    const void* connection;
    unsigned generation;
    const Binding* previous = nullptr;  // the one it replaced: a reader may still be looking at it
};

NearSlot::~NearSlot() {
    const Binding* b = binding.load(std::memory_order_acquire);
    while (b) delete std::exchange(b, b->previous);
}

NearCache* near_cache(const RegionSettings& region, const Connection& conn) {
    if (!region.near) return nullptr;
    const void* key = &conn.options();
    const unsigned generation = fork_generation.load(std::memory_order_relaxed);
    const NearSlot::Binding* b = region.near->binding.load(std::memory_order_acquire);
    if (b && b->connection == key && b->generation == generation) return b->cache;

    NearCache* cache = nullptr;
    // A tracking link would have to follow failovers (Sentinel), or every
    // node and its slot moves (Cluster): the near cache is off there.
    if (cache_topology(conn).near_cache_possible(conn)) {
        NearState& s = state();
        std::lock_guard lock(s.mutex);
        auto& slot = s.caches[{region.name, key}];
        if (!slot)
            slot = std::make_unique<NearCache>(region.name, region.options.local,
                                               region.options.stats_retention);
        cache = slot.get();
        auto& tracker = s.trackers[key];
        if (!tracker) tracker = std::make_unique<Tracker>(conn);
        tracker->attach(cache);
    }
    // Bindings are tiny and made once per region and connection; the ones
    // replaced stay chained (and readable) until the slot goes.
    auto* fresh = new NearSlot::Binding{cache, key, generation, b};
    while (!region.near->binding.compare_exchange_weak(b, fresh, std::memory_order_acq_rel))
        fresh->previous = b;
    return cache;
}

void near_region_changed(const std::string& region, LocalCacheOptions limits) {
    NearState& s = state();
    std::lock_guard lock(s.mutex);
    for (auto& [id, cache] : s.caches)
        if (id.first == region) cache->reconfigure(limits);
}

bool near_tracking_active(const Connection& conn) {
    NearState& s = state();
    std::lock_guard lock(s.mutex);
    auto it = s.trackers.find(&conn.options());
    return it != s.trackers.end() && it->second->active();
}

void flush_near_statistics() {
    std::vector<Tracker*> trackers;
    {
        NearState& s = state();
        std::lock_guard lock(s.mutex);
        for (auto& [key, t] : s.trackers) trackers.push_back(t.get());
    }
    for (Tracker* t : trackers) t->flush();
}

}  // namespace retools::detail
