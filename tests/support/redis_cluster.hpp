#pragma once
// A private Redis Cluster for tests: N masters (and R replicas each) started
// with `redis-server --cluster-enabled yes` on free loopback ports, joined
// with `redis-cli --cluster create`, their node files in a temporary
// directory. Everything stops (and dies with the test process) at the end.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <retools/connection.hpp>

#include "redis_server.hpp"

namespace retools::test {

/// How RedisCluster::move_slot moves a slot. Every field has a default.
struct SlotMove {
    /// Keys per MIGRATE. Default 10; 1 moves key by key.
    int batch = 10;
    /// Wait after the slot is marked importing/migrating and after each
    /// MIGRATE, so the slot stays mid-migration (ASK, TRYAGAIN) that long.
    /// Default 0.
    std::chrono::milliseconds pause{0};
    /// Wait between telling each master the new owner (the target first,
    /// then the source, then the others), so the nodes disagree about the
    /// slot for a while. Default 0.
    std::chrono::milliseconds settle{0};
    /// Runs after each MIGRATE (to interleave with a workload). Default none.
    std::function<void()> between;
};

struct RedisClusterOptions {
    /// Masters (the slots are split evenly among them). At least 3.
    int masters = 3;
    /// Replicas per master.
    int replicas = 0;
    /// `cluster-node-timeout`: how long a silent master may be before its
    /// replica takes over.
    std::chrono::milliseconds node_timeout{1000};
    /// Extra arguments of every node.
    std::vector<std::string> server_args;
};

/// Starts and joins on construction (waits until every node says
/// `cluster_state:ok`); stops everything on destruction.
class RedisCluster {
public:
    explicit RedisCluster(RedisClusterOptions options = {});
    ~RedisCluster();
    RedisCluster(const RedisCluster&) = delete;
    RedisCluster& operator=(const RedisCluster&) = delete;

    /// Every node's port, in start order (the first `masters` started as masters).
    std::vector<int> ports() const;
    /// `redis-cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...` (every node).
    std::string url() const;
    /// ConnectionOptions with ClusterOptions::seeds = every node.
    ConnectionOptions options() const;

    /// Ports of the nodes that are masters now (CLUSTER NODES of a live node).
    std::vector<int> master_ports() const;
    /// The port of the master serving `slot` now (0 if none answers).
    int master_of(std::uint16_t slot) const;
    /// The node id of the node on `port`.
    std::string node_id(int port) const;
    /// A plain connection to the node on `port` (no cluster routing).
    static Connection direct(int port);
    /// A node's cluster_current_epoch (the highest config epoch it has heard of).
    static long long current_epoch(int port);
    /// The highest cluster_my_epoch (config epoch) of `ports`.
    static long long highest_epoch(const std::vector<int>& ports);

    /// Every running node says `cluster_state:ok` and agrees on who serves every slot.
    bool wait_ok(std::chrono::milliseconds within = std::chrono::seconds(15)) const;
    /// For failure messages: each node's cluster_state and the masters it names per slot range.
    std::string state() const;
    /// Moves `slot` (with its keys) from its master to the master on `to_port`
    /// by hand: SETSLOT IMPORTING / MIGRATING, MIGRATE in batches of `batch`
    /// keys, SETSLOT NODE on every master. `between` runs after each batch
    /// (to interleave with a workload).
    void move_slot(std::uint16_t slot, int to_port, int batch = 10,
                   const std::function<void()>& between = {});
    /// move_slot with the pacing of `how` (see SlotMove).
    void move_slot(std::uint16_t slot, int to_port, const SlotMove& how);
    /// Moves `slot` one key per MIGRATE with `per_key` between keys, and
    /// `settle` between the SETSLOT NODE calls: the slot stays in the ASK
    /// state for about (keys + 1) * per_key, then its owners disagree for
    /// about 2 * settle.
    void move_slot_slowly(std::uint16_t slot, int to_port, std::chrono::milliseconds per_key,
                          std::chrono::milliseconds settle) {
        move_slot(slot, to_port, SlotMove{.batch = 1, .pause = per_key, .settle = settle});
    }
    /// Deletes every key on every master.
    void flush_all() const;
    /// SIGKILL the node on `port` (no restart).
    void kill_node(int port);
    /// Waits until every replica has every write of its master (`WAIT` on each master).
    bool wait_replicated(std::chrono::milliseconds within = std::chrono::seconds(3)) const;
    /// Whether the node on `port` runs.
    bool running(int port) const;

private:
    RedisClusterOptions options_;
    std::string dir_;
    std::vector<std::unique_ptr<RedisServer>> nodes_;
};

}  // namespace retools::test
