// The two topologies a worker runs on (see topology.hpp).

#include "worker/topology.hpp"

#include "queue/keys.hpp"

namespace retools::detail {

namespace {

class SingleNode final : public QueueTopology {
public:
    std::vector<Reply> apply(const Connection& conn, const Pipeline& pipeline) const override {
        return conn.transaction(pipeline);
    }
    long long processing_lists(const Connection& conn, std::string_view worker_id,
                               const std::vector<std::string>&) const override {
        return conn.command("EXISTS", queue_keys::processing(worker_id, "", false)).as_integer();
    }
};

class Cluster final : public QueueTopology {
public:
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
};

}  // namespace

std::unique_ptr<QueueTopology> make_queue_topology(const Connection& conn) {
    if (conn.is_cluster()) return std::make_unique<Cluster>();
    return std::make_unique<SingleNode>();
}

}  // namespace retools::detail
