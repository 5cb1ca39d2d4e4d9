// The two topologies a worker runs on (see topology.hpp).

#include "worker/topology.hpp"

#include <algorithm>

#include "queue/keys.hpp"

namespace retools::detail {

namespace {

class SingleNode final : public WorkerTopology {
public:
    explicit SingleNode(const queue::Topology& layout) : keys_(layout) {}
    const queue::Topology& keys() const override { return keys_; }
    std::vector<Reply> apply(const Connection& conn, const Pipeline& pipeline) const override {
        return conn.transaction(pipeline);
    }
    long long processing_lists(const Connection& conn, std::string_view worker_id,
                               const std::vector<std::string>&) const override {
        return conn.command("EXISTS", queue_keys::processing(worker_id, "", false)).as_integer();
    }
    Recovered recover(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                      std::size_t max_recoveries, bool unregister,
                      std::string_view expected_heartbeat) const override {
        return recover_worker_on_node(conn, worker_id, mode, max_recoveries, unregister, expected_heartbeat);
    }
    void for_each_holder(const Connection& conn,
                         const std::function<void(std::string_view)>& visit) const override {
        // Every processing list: also those of workers that never beat (older
        // versions) or whose heartbeat entry was lost.
        std::string cursor = "0";
        std::string pattern = std::string(queue_keys::processing_prefix) + "*";
        do {
            Reply page = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000);
            cursor = page[0].as_string();
            for (const Reply& key : page[1].as_array())
                visit(key.view().substr(queue_keys::processing_prefix.size()));
        } while (cursor != "0");
    }
    std::unique_ptr<ReliableFetch> make_fetch(Connection conn, std::string worker_id,
                                              const std::vector<std::string>& queues) const override {
        return make_single_node_fetch(std::move(conn), std::move(worker_id), queues);
    }
    std::chrono::milliseconds wait_block(std::chrono::milliseconds requested) const override {
        return requested;
    }

private:
    const queue::Topology& keys_;
};

class Cluster final : public WorkerTopology {
public:
    explicit Cluster(const queue::Topology& layout) : keys_(layout) {}
    const queue::Topology& keys() const override { return keys_; }
    std::vector<Reply> apply(const Connection& conn, const Pipeline& pipeline) const override {
        return conn.execute(pipeline);
    }
    long long processing_lists(const Connection& conn, std::string_view worker_id,
                               const std::vector<std::string>& queues) const override {
        long long n = 0;
        for (const auto& q : queues)
            n += conn.command("EXISTS", queue_keys::processing(worker_id, q, true)).as_integer();
        return n;
    }
    Recovered recover(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                      std::size_t max_recoveries, bool unregister,
                      std::string_view expected_heartbeat) const override {
        return recover_worker_on_cluster(conn, worker_id, mode, max_recoveries, unregister,
                                         expected_heartbeat);
    }
    void for_each_holder(const Connection& conn,
                         const std::function<void(std::string_view)>& visit) const override {
        // SCAN sees one node: every registered worker instead (workers here
        // always beat, so the heartbeat set finds the others).
        for (const Reply& member : conn.command("SMEMBERS", queue_keys::workers).as_array())
            visit(member.view());
    }
    std::unique_ptr<ReliableFetch> make_fetch(Connection conn, std::string worker_id,
                                              const std::vector<std::string>& queues) const override {
        return make_cluster_fetch(std::move(conn), std::move(worker_id), queues);
    }
    std::chrono::milliseconds wait_block(std::chrono::milliseconds requested) const override {
        // A wait is sent again at least every second: a slot that moved is
        // then followed within that bound, and a CLIENT UNBLOCK that reached
        // the wrong node (the slot moved) delays the stop no longer.
        return std::min(requested, std::chrono::milliseconds(1000));
    }

private:
    const queue::Topology& keys_;
};

}  // namespace

const WorkerTopology& worker_topology(const Connection& conn) {
    static const SingleNode single_node(queue::single_node_topology());
    static const Cluster cluster(queue::cluster_topology());
    if (conn.is_cluster()) return cluster;
    return single_node;
}

}  // namespace retools::detail
