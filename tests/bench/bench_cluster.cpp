// Redis Cluster (3 masters on loopback, started by retools-bench): a GET, a
// cache hit and an enqueue through a cluster Connection, beside raw hiredis sending the same
// commands straight to the node that owns each key; and enqueues from 16
// threads into 16 queues (spread over the masters), against the same on the
// single server.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/pickle.hpp>
#include <retools/queue.hpp>

#include "cache/keys.hpp"
#include "client/cluster.hpp"
#include "raw.hpp"
#include "redis_cluster.hpp"
#include "rows.hpp"
#include "util/clock.hpp"

namespace bench {
namespace {

constexpr std::string_view kKey = "bench:cluster:key";

// A raw connection to the master of `key`'s slot.
std::unique_ptr<RawConnection> raw_for(const Env& env, std::string_view key) {
    Env node = env;
    node.host = "127.0.0.1";
    node.port = env.cluster->master_of(retools::detail::key_slot(key));
    return std::make_unique<RawConnection>(node);
}

Run cluster_retools_get(const Env& env, std::size_t count) {
    retools::Connection conn{env.cluster->url()};
    conn.command("SET", kKey, "value");
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) conn.command("GET", kKey);
            }),
            {}};
}

Run cluster_raw_get(const Env& env, std::size_t count) {
    auto raw = raw_for(env, kKey);
    raw->cmd("SET", kKey, "value");
    raw->read();
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    raw->cmd("GET", kKey);
                    raw->read();
                }
            }),
            {}};
}

Run cluster_retools_enqueue(const Env& env, std::size_t count) {
    retools::QueueManager qm{retools::Connection{env.cluster->url()}};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) qm.enqueue(kNoopJob);
            }),
            {}};
}

constexpr std::string_view kClusterRegion = "bench_cluster";
constexpr std::string_view kClusterNamespace = "bench.cluster_things";

std::string cluster_things(const std::string& term, int limit) {
    std::string out;
    for (int i = 0; i < limit; ++i) out += term + " ";
    return out;
}

// A fresh hit with statistics through a region on the cluster Connection.
Run cluster_retools_hit(const Env& env, std::size_t count) {
    retools::CacheRegion::add_region(std::string(kClusterRegion),
                                     {.expires = std::chrono::hours(1),
                                      .connection = retools::Connection{env.cluster->url()}});
    auto cached = retools::cache_region(std::string(kClusterRegion), std::string(kClusterNamespace), cluster_things);
    cached("bunny", 10);
    std::size_t total = 0;
    double seconds = time_it([&] {
        for (std::size_t i = 0; i < count; ++i) total += cached("bunny", 10).size();
    });
    if (total != count * 60) throw std::runtime_error("bad cached value");
    return {seconds, {}};
}

// What that hit sends: MULTI/HGETALL/GET/INCR/EXEC on the keys of the call,
// which share one hash tag, to their node.
Run cluster_raw_hit(const Env& env, std::size_t count) {
    namespace keys = retools::detail::cache_keys;
    const std::string vkey = keys::value(kClusterRegion, kClusterNamespace, "bunny 10", true);
    auto raw = raw_for(env, vkey);
    raw->cmd("HSET", vkey, "created", retools::detail::python_repr(retools::detail::unix_now()), "value",
             retools::pickle::dumps(cluster_things("bunny", 10)));
    raw->read();
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    const std::string hkey =
                        keys::hits(retools::detail::local_date(), kClusterRegion, kClusterNamespace, "bunny 10", true);
                    raw->cmd("MULTI");
                    raw->cmd("HGETALL", vkey);
                    raw->cmd("GET", hkey);
                    raw->cmd("INCR", hkey);
                    raw->cmd("EXEC");
                    auto exec = raw->read(5);
                    if (exec->element[0]->elements != 4) throw std::runtime_error("floor: no cached value");
                }
            }),
            {}};
}

// What an enqueue sends on a cluster: RPUSH to the queue (its own slot) and
// SADD to retools:queues, each to its node; one request when both are on one node.
Run cluster_raw_enqueue(const Env& env, std::size_t count) {
    const std::string queue = "retools:queue:{main}";
    const int queue_node = env.cluster->master_of(retools::detail::key_slot(queue));
    const int set_node = env.cluster->master_of(retools::detail::key_slot("retools:queues"));
    auto to_queue = raw_for(env, queue);
    std::unique_ptr<RawConnection> to_set = queue_node == set_node ? nullptr : raw_for(env, "retools:queues");
    std::string p;
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    noop_payload(p);
                    to_queue->cmd("RPUSH", queue, p);
                    if (to_set) {
                        to_set->cmd("SADD", "retools:queues", "main");
                        to_queue->read();
                        to_set->read();
                    } else {
                        to_queue->cmd("SADD", "retools:queues", "main");
                        to_queue->read(2);
                    }
                }
            }),
            {}};
}

// 16 threads, each enqueueing into a queue of its own, through one Connection.
Run enqueue_16(const retools::Connection& conn, std::size_t count) {
    retools::QueueManager qm{conn};
    return {run_threads(16, count,
                        [&](std::size_t t, std::size_t ops) {
                            const std::string queue = fmt::format("q{}", t);
                            for (std::size_t i = 0; i < ops; ++i)
                                qm.enqueue(kNoopJob, nullptr, {.queue_name = queue});
                        }),
            {}};
}

}  // namespace

void add_cluster_rows(const Env& env, std::vector<Row>& rows) {
    if (env.cluster == nullptr) return;
    const std::size_t n = env.counts.ops;
    rows.push_back({.id = "cluster_get",
                    .label = "Cluster: one command (GET), floor raw to the key's node",
                    .count = n,
                    .retools = cluster_retools_get,
                    .floor = cluster_raw_get,
                    .floor_target = 0.9});
    rows.push_back({.id = "cluster_cache_hit",
                    .label = "Cluster: cache hit with statistics, floor raw to the call's node",
                    .count = n,
                    .retools = cluster_retools_hit,
                    .floor = cluster_raw_hit,
                    .floor_target = 0.9});
    rows.push_back({.id = "cluster_enqueue_one",
                    .label = "Cluster: enqueue one job, floor raw to each key's node",
                    .count = n,
                    .retools = cluster_retools_enqueue,
                    .floor = cluster_raw_enqueue,
                    .floor_target = 0.9});
    rows.push_back({.id = "enqueue_16_single",
                    .label = "Queue: enqueue, 16 threads into 16 queues, one server",
                    .count = n,
                    .retools = [](const Env& e, std::size_t c) { return enqueue_16(e.conn, c); }});
    rows.push_back({.id = "enqueue_16_cluster",
                    .label = "Queue: enqueue, 16 threads into 16 queues, 3-master cluster",
                    .count = n,
                    .retools = [](const Env& e, std::size_t c) {
                        return enqueue_16(retools::Connection{e.cluster->url()}, c);
                    }});
}

}  // namespace bench
