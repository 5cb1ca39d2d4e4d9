#pragma once
// A private Sentinel set for tests: one master, one replica and three
// `redis-server --sentinel` processes, all on free loopback ports, with
// config files in a temporary directory. Everything dies with the test process.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "process.hpp"
#include "redis_server.hpp"

namespace retools::test {

struct SentinelSetOptions {
    /// The monitored master's name.
    std::string name = "mymaster";
    /// `sentinel down-after-milliseconds`: how long the master may be silent
    /// before it is subjectively down.
    std::chrono::milliseconds down_after{1000};
    /// `sentinel failover-timeout`.
    std::chrono::milliseconds failover_timeout{2000};
    /// Extra arguments of both data nodes (master and replica).
    std::vector<std::string> server_args;
};

/// Starts on construction (and waits until every sentinel sees the master,
/// the replica and the other sentinels); stops everything on destruction.
class SentinelSet {
public:
    explicit SentinelSet(SentinelSetOptions options = {});
    ~SentinelSet();
    SentinelSet(const SentinelSet&) = delete;
    SentinelSet& operator=(const SentinelSet&) = delete;

    const std::string& name() const noexcept { return options_.name; }
    /// Ports of the two data nodes, in start order (the first started as the master).
    int first_master_port() const noexcept { return nodes_[0]->port(); }
    int first_replica_port() const noexcept { return nodes_[1]->port(); }
    /// Ports of the three sentinels, in order.
    const std::vector<int>& sentinel_ports() const noexcept { return sentinel_ports_; }
    /// `redis-sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/0?master=<name>`
    std::string url() const;

    /// The master's port as the first running sentinel reports it (nullopt if none answers).
    std::optional<int> reported_master_port() const;
    /// The port the data node `port` says it is a replica of, or 0 when it says master
    /// (nullopt when it does not answer).
    std::optional<int> replica_of(int port) const;
    /// Waits until every running sentinel reports `port` as the master and
    /// that node answers ROLE with `master`.
    bool wait_for_master(int port, std::chrono::milliseconds within = std::chrono::seconds(15)) const;
    /// The process of the data node on `port` (for SIGSTOP and SIGCONT).
    pid_t node_pid(int port) const;
    /// The data node that is not `port`.
    int other_node(int port) const;

    /// `SENTINEL FAILOVER <name>` on the first running sentinel; returns the
    /// port that is master afterwards (the former replica), once every running
    /// sentinel reports it. Throws std::runtime_error if that takes over 15 s.
    int failover();
    /// SIGKILL the data node on `port` (no restart).
    void kill_node(int port);
    /// Waits until the replica has every write of the master (`WAIT 1`).
    bool wait_replicated(std::chrono::milliseconds within = std::chrono::seconds(3)) const;

    /// Stops sentinel `index` (SIGTERM) / starts it again on the same port and config.
    void stop_sentinel(std::size_t index);
    void start_sentinel(std::size_t index);

private:
    void launch_sentinel(std::size_t index);
    bool sentinels_ready() const;

    SentinelSetOptions options_;
    std::string dir_;
    std::vector<std::unique_ptr<RedisServer>> nodes_;
    std::vector<int> sentinel_ports_;
    std::vector<std::optional<ChildProcess>> sentinels_;
};

}  // namespace retools::test
