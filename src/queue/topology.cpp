// The job queue on one node and on a Redis Cluster (see topology.hpp).
#include "queue/topology.hpp"

#include <algorithm>

#include <retools/errors.hpp>
#include <retools/script.hpp>

#include "util/clock.hpp"
#include "generated/lua_scripts.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"

namespace retools::detail::queue {

namespace {

namespace keys = queue_keys;

class SingleNodeTopology final : public Topology {
public:
    std::string queue_key(std::string_view name) const override { return keys::queue(name, false); }
    std::string delayed_key(std::string_view queue) const override { return keys::delayed(queue, false); }
    std::string processing_key(std::string_view worker_id, std::string_view queue) const override {
        return keys::processing(worker_id, queue, false);
    }
    std::string periodic_key(std::string_view) const override { return std::string(keys::periodic_all); }
    std::string periodic_due_key(std::string_view) const override { return keys::periodic_due({}, false); }
    std::vector<std::string> periodic_queues(const Connection&) const override { return {std::string()}; }
    std::string unique_key(std::string_view queue, std::string_view key) const override {
        return keys::unique(queue, key, false);
    }

    void add_delayed(Pipeline& p, std::string_view queue, double due,
                     const std::string& member) const override {
        p.command("ZADD", keys::delayed(queue, false), due, member);
    }

    std::size_t promote_due(const Connection& conn, double now, std::size_t limit) const override {
        // Nothing leaves retools:delayed before it has landed elsewhere; a queue key
        // that will not take a job files it in retools:failed (src/queue/lua/promote_due.lua).
        static const Script promote_script{std::string(lua::queue_promote_due)};
        Reply r = promote_script(conn, {keys::delayed_all, keys::queues, keys::failed}, now,
                                 static_cast<long long>(limit), keys::queue_prefix, unix_now());
        return static_cast<std::size_t>(r.as_integer());
    }

    std::optional<double> next_due(const Connection& conn) const override {
        Reply r = conn.command("ZRANGE", keys::delayed_all, 0, 0, "WITHSCORES");
        if (r.size() < 2) return std::nullopt;
        return r[1].as_double();
    }

    std::vector<Reply> scheduled_sets(const Connection& conn) const override {
        std::vector<Reply> sets;
        sets.push_back(conn.command("ZRANGE", keys::delayed_all, 0, -1, "WITHSCORES"));
        return sets;
    }

    bool cancel_scheduled(const Connection& conn, std::string_view job_id) const override {
        // src/queue/lua/cancel_scheduled.lua: 1 when removed.
        static const Script cancel_script{std::string(lua::queue_cancel_scheduled)};
        return cancel_script(conn, {keys::delayed_all}, job_id).as_integer() == 1;
    }

    bool retry_failed(const Connection& conn, const FailedJob& failed,
                      const std::string& entry) const override {
        // src/queue/lua/retry_failed.lua checks the queue key before the entry
        // leaves the failed list.
        static const Script retry_one{std::string(lua::queue_retry_failed)};
        Reply r = retry_one(conn, {keys::failed, keys::queue(failed.queue, false), keys::queues}, entry,
                            failed.payload, failed.queue);
        return r.as_integer() == 1;
    }

    std::size_t retry_all_failed(const QueueManager&, const Connection& conn) const override {
        // Entries that cannot be retried (unreadable, or their queue key is not
        // a list) stay, in order (src/queue/lua/retry_all_failed.lua).
        static const Script retry_all{std::string(lua::queue_retry_all_failed)};
        Reply r = retry_all(conn, {keys::failed, keys::queues}, keys::queue_prefix);
        return static_cast<std::size_t>(r.as_integer());
    }
};

// The scheduled jobs of every known queue, one sorted set each.
std::vector<std::string> delayed_queues(const Connection& conn) {
    std::vector<std::string> names;
    for (const auto& r : conn.command("SMEMBERS", keys::queues).as_array()) names.push_back(r.as_string());
    std::sort(names.begin(), names.end());
    return names;
}

class ClusterTopology final : public Topology {
public:
    std::string queue_key(std::string_view name) const override { return keys::queue(name, true); }
    std::string delayed_key(std::string_view queue) const override { return keys::delayed(queue, true); }
    std::string processing_key(std::string_view worker_id, std::string_view queue) const override {
        return keys::processing(worker_id, queue, true);
    }
    std::string periodic_key(std::string_view queue) const override { return keys::periodic(queue, true); }
    std::string periodic_due_key(std::string_view queue) const override {
        return keys::periodic_due(queue, true);
    }
    std::vector<std::string> periodic_queues(const Connection& conn) const override {
        return delayed_queues(conn);
    }
    std::string unique_key(std::string_view queue, std::string_view key) const override {
        return keys::unique(queue, key, true);
    }

    void add_delayed(Pipeline& p, std::string_view queue, double due,
                     const std::string& member) const override {
        p.command("ZADD", keys::delayed(queue, true), due, member);
        // One delayed set per queue: promoters find them through retools:queues.
        p.command("SADD", keys::queues, queue);
    }

    std::size_t promote_due(const Connection& conn, double now, std::size_t limit) const override {
        // One queue's delayed set at a time (src/queue/lua/promote_due_cluster.lua).
        static const Script promote_one{std::string(lua::queue_promote_due_cluster)};
        std::size_t moved = 0;
        for (const auto& q : delayed_queues(conn)) {
            if (moved >= limit) break;
            Reply r = promote_one(conn, {keys::delayed(q, true), keys::queue(q, true)}, now,
                                  static_cast<long long>(limit - moved), q);
            moved += static_cast<std::size_t>(r[0].as_integer());
            if (r[1].size() > 0) quarantine_delayed(conn, q, r[1].as_array(), "", unix_now());
        }
        return moved;
    }

    std::optional<double> next_due(const Connection& conn) const override {
        Pipeline p;
        for (const auto& q : delayed_queues(conn))
            p.command("ZRANGE", keys::delayed(q, true), 0, 0, "WITHSCORES");
        std::optional<double> first;
        if (!p.empty())
            for (const Reply& r : conn.execute(p))
                if (!r.is_error() && r.size() >= 2 && (!first || r[1].as_double() < *first))
                    first = r[1].as_double();
        return first;
    }

    std::vector<Reply> scheduled_sets(const Connection& conn) const override {
        Pipeline p;
        for (const auto& q : delayed_queues(conn))
            p.command("ZRANGE", keys::delayed(q, true), 0, -1, "WITHSCORES");
        if (p.empty()) return {};
        return conn.execute(p);
    }

    bool cancel_scheduled(const Connection& conn, std::string_view job_id) const override {
        static const Script cancel_script{std::string(lua::queue_cancel_scheduled)};
        for (const auto& q : delayed_queues(conn))
            if (cancel_script(conn, {keys::delayed(q, true)}, job_id).as_integer() == 1) return true;
        return false;
    }

    bool retry_failed(const Connection& conn, const FailedJob& failed,
                      const std::string& entry) const override {
        // The failed list and the queue are in different slots: the job is
        // pushed first and leaves the failed list after (a crash in between
        // duplicates it, never loses it). An entry another caller retried
        // meanwhile takes our push back off the tail.
        const std::string queue_key = keys::queue(failed.queue, true);
        conn.command("RPUSH", queue_key, failed.payload).check();
        if (conn.command("LREM", keys::failed, 1, entry).as_integer() == 0) {
            conn.command("LREM", queue_key, -1, failed.payload);
            return false;
        }
        conn.command("SADD", keys::queues, failed.queue);
        return true;
    }

    std::size_t retry_all_failed(const QueueManager& qm, const Connection&) const override {
        // One entry at a time (see retry_failed); unreadable entries and those
        // whose queue key refuses them stay.
        std::size_t moved = 0;
        for (const FailedJob& f : qm.failed_jobs()) {
            if (f.queue.empty() || f.queue.find_first_of(":,") != std::string::npos) continue;
            try {
                if (qm.retry_failed(f)) ++moved;
            } catch (const Error&) {
                // WRONGTYPE queue key or bad name: the entry stays in the failed list.
            }
        }
        return moved;
    }
};

}  // namespace

const Topology& single_node_topology() {
    static const SingleNodeTopology topology;
    return topology;
}

const Topology& cluster_topology() {
    static const ClusterTopology topology;
    return topology;
}

const Topology& topology_of(const Connection& conn) {
    if (conn.is_cluster()) return cluster_topology();
    return single_node_topology();
}

}  // namespace retools::detail::queue
