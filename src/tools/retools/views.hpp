#pragma once
// The data model shared by the CLI, the dashboard and /metrics: what is in
// Redis, read through the library's public API (plus Connection::command for
// the keys the worker writes and the library has no reader for), as JSON.
//
// Times are float Unix seconds; ages and latencies float seconds; a value that
// cannot be known (no enqueue time, no heartbeat) is null.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>
#include <retools/queue.hpp>

namespace retools::tools {

/// Keys the worker writes for tools (see docs/operations.md); Python retools ignores them.
namespace stat_keys {
inline constexpr std::string_view processed = "retools:stat:processed";
inline constexpr std::string_view failed = "retools:stat:failed";
inline constexpr std::string_view heartbeat_prefix = "retools:heartbeat:";
}  // namespace stat_keys

/// How the views read one node or a Redis Cluster (views.cpp).
class ViewTopology;

/// Reads everything the views show from one Redis.
class Views {
public:
    explicit Views(Connection conn);

    const Connection& connection() const noexcept { return conn_; }
    const QueueManager& queue_manager() const noexcept { return qm_; }

    /// The server, for display: ConnectionOptions::describe() (never a password).
    std::string server() const;

    /// Every queue in `retools:queues`, sorted by name: `{"name", "length",
    /// "latency", "jobs": [first `peek` jobs]}`. A job: `{"job_id", "job",
    /// "kwargs", "enqueued_at"}`, or `{"payload", "error"}` when unreadable.
    nlohmann::json queues(std::size_t peek = 0) const;
    /// Live workers (retools:workers ∪ heartbeat keys), sorted by id: `{"id",
    /// "host", "pid", "queues", "started", "heartbeat_age", "busy", "threads",
    /// "mode", "version", "kind" ("retools" with a heartbeat, else "registered"),
    /// "processing" (jobs held), "current": null | {"queue", "job_id", "job",
    /// "kwargs", "run_at", "running_for"}}`.
    nlohmann::json workers() const;
    /// `{"processed", "failed", "processed_today", "failed_today"}` (UTC day).
    nlohmann::json counters() const;
    /// The last `hours` UTC hours, oldest first: `[{"hour": "YYYY-MM-DDTHH", "processed", "failed"}]`.
    nlohmann::json history(int hours = 24) const;
    /// `retools:failed`, oldest first: `{"index", "job_id", "job", "queue",
    /// "error", "worker", "failed_at", "payload", "entry"}`.
    nlohmann::json failed() const;
    /// `retools:delayed`, earliest first: `{"job_id", "job", "queue", "kwargs", "due"}`.
    nlohmann::json scheduled() const;
    /// Periodic jobs, earliest next run first: id, schedule, job, queue, kwargs, next_run (Unix seconds).
    nlohmann::json periodic() const;
    /// Names in `retools:regions`, sorted.
    std::vector<std::string> regions() const;
    /// Statistics of a region (one namespace when `ns` is not empty) summed over
    /// `dates` (local `YYYY-MM-DD`): `{"region", "dates", "hits", "misses",
    /// "calls", "hit_ratio", "namespaces": [{"namespace", hits..., "keys":
    /// [{"key", hits...}]}]}`, namespaces and keys sorted by calls, most first.
    nlohmann::json stats(std::string_view region, std::string_view ns,
                         const std::vector<std::string>& dates) const;
    /// Every region with its namespaces' hits/misses today and over the last 7 days.
    nlohmann::json cache() const;
    /// Summary: server, counters, queues, workers, failed and scheduled counts.
    nlohmann::json info() const;
    /// Jobs waiting for their due time (scheduled or retries), every queue.
    long long scheduled_count() const;

private:
    Connection conn_;
    QueueManager qm_;
    const ViewTopology* topology_;  // chosen from conn_ once
};

/// Local dates `YYYY-MM-DD`: `days` days ending at `last` (empty: today), newest first.
/// Throws ConfigurationError for a malformed date or `days` < 1.
std::vector<std::string> date_range(std::string_view last, int days);
/// UTC `YYYY-MM-DD` (or `YYYY-MM-DDTHH` with `hour`) of Unix time `t`.
std::string utc_stamp(double t, bool hour = false);
/// Unix time now, float seconds.
double now_seconds();

/// JSON text that never throws: invalid UTF-8 becomes U+FFFD.
std::string dump(const nlohmann::json& j, int indent = -1);

}  // namespace retools::tools
