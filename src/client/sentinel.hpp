#pragma once
// Sentinel: finds the master of a Sentinel-monitored set and follows it
// through failovers, for one process's pool.
//
// Discovery asks the sentinels in list order (`SENTINEL get-master-addr-by-name`,
// each within connect_timeout) and checks the named node with `ROLE`. A
// watcher thread subscribes to every sentinel's failover events:
//  - `+failover-state-send-slaveof-noone` (the leader is about to promote a
//    replica): the monitor fences the old master, so no new request reaches
//    it while the replica detaches from it (writes there would be lost when
//    it is turned into a replica). Requests wait for the switch instead.
//  - `+switch-master`: the new address; the fence lifts.
//  - a failover abort or timeout: the fence lifts and the next request asks
//    the sentinels again.
// The pool tags each link with the generation it was opened under and drops
// links of older generations, so after a switch nothing talks to the old master.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail {

class TlsContext;
class Link;

/// ConnectionOptions::from_url for `redis-sentinel://` URLs.
ConnectionOptions parse_sentinel_url(std::string_view url);
/// ConnectionOptions::describe() with a sentinel: `master "mymaster" via 10.0.0.1:26379,10.0.0.2:26379/0`.
std::string describe_sentinel(const ConnectionOptions& options);
/// Checks SentinelOptions when a Connection is made; throws ConfigurationError.
void validate_sentinel(const ConnectionOptions& options);

/// An error reply by which a node says it did not run the command because
/// it is not (or not yet) a usable master: READONLY, LOADING, MASTERDOWN.
bool failover_reply(const Reply& reply);

class SentinelMonitor {
public:
    /// `options.sentinel` must be set; the rest of `options` (user, password,
    /// TLS, timeouts) describes the data nodes. `data_tls` is the pool's TLS
    /// context for the data nodes (null: plain text); it must outlive this.
    SentinelMonitor(const ConnectionOptions& options, const TlsContext* data_tls);
    ~SentinelMonitor();
    SentinelMonitor(const SentinelMonitor&) = delete;
    SentinelMonitor& operator=(const SentinelMonitor&) = delete;

    struct Master {
        Endpoint address;
        std::uint64_t generation = 0;
    };

    /// The master to connect to: the one known, or one found now. While a
    /// failover is under way (fenced, or the sentinels name a node that is
    /// down or not a master), waits for it, at most `wait` (0: one attempt).
    /// Throws ConnectionError naming the master and what was tried.
    Master master(std::chrono::milliseconds wait);

    /// Changes whenever the master changes or is fenced: links opened under
    /// another generation must not be used again.
    std::uint64_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }

    /// A link to the master of `generation` broke, or the node answered
    /// READONLY / LOADING: ask the sentinels again before the next link.
    void suspect(std::uint64_t generation);

    /// Master changes seen (a switch to another address).
    std::uint64_t switches() const noexcept { return switches_.load(std::memory_order_relaxed); }

private:
    struct Found;
    Found discover();
    std::string check_role(const Endpoint& node) const;
    ConnectionOptions sentinel_options(const Endpoint& sentinel) const;
    void set_master_locked(const Endpoint& address);
    void start_watcher_locked();
    void watch(std::size_t index);
    void on_event(std::size_t from, const std::string& channel, const std::string& payload);

    const ConnectionOptions options_;  // data nodes; options_.sentinel is set
    const SentinelOptions& sentinel_;  // *options_.sentinel
    const TlsContext* data_tls_;
    std::unique_ptr<const TlsContext> sentinel_tls_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::optional<Endpoint> known_;  // the verified master
    bool stale_ = false;             // known_ must be checked again
    bool discovering_ = false;       // one thread asks the sentinels at a time
    bool fenced_ = false;            // a failover is promoting a replica
    std::size_t fence_from_ = 0;     // the sentinel whose event fenced
    std::chrono::steady_clock::time_point fence_ends_{};
    std::chrono::steady_clock::time_point retry_after_{};  // a discovery just failed
    std::string last_problem_;
    std::atomic<std::uint64_t> generation_{1};
    std::atomic<std::uint64_t> switches_{0};

    bool stop_ = false;
    bool watching_ = false;
    std::vector<std::thread> watchers_;
};

}  // namespace retools::detail
