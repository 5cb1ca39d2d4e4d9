#pragma once
// Job: one job payload as the original writes it, parsed and validated.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>

namespace retools {

/// One job: the payload the original writes to `retools:queue:<name>`,
///
/// ```json
/// {"job_id": "<uuid4 hex>", "job": "<module>:<function>", "kwargs": {...},
///  "events": {"<event>": ["<handler>", ...]}, "metadata": {...}, "state": {...}}
/// ```
///
/// parsed and validated. A worker builds one per payload it takes; event
/// handlers may change `state()` (and `metadata()`), which is saved when the
/// job is put back with `enqueue()`.
///
/// ```cpp
/// retools::Job job = retools::Job::from_payload(text, "main");   // throws QueueError if malformed
/// job.state()["tries"] = 1;
/// job.enqueue();                                                 // RPUSH + SADD, one round trip
/// ```
///
/// Conventions read from `metadata` (all optional; see the README):
/// - `"retries"`: how many times a failed job is tried again (integer, default 0);
/// - `"retry_backoff"`: seconds before the first retry, doubled for each
///   further one (number, default 1);
/// - `"retry_max_delay"`: the most seconds between two tries (number, default
///   3600). A worker waits a random time between half and all of the delay,
///   so jobs that failed together do not retry together;
/// - `"result_ttl"`: when > 0, the worker stores the job's result for that
///   many seconds under `retools:result:<job id>` (see QueueManager::wait_for_result).
/// The number of retries already made is kept in `state["retried"]`.
class Job {
public:
    /// Parses and validates a payload taken from queue `queue_name` (the short
    /// name, `main`, not the key). Throws QueueError naming the problem when
    /// the text is not JSON, nests arrays/objects deeper than 512 levels
    /// (checked before parsing, so hostile text never exhausts the stack),
    /// is not an object, or a field is missing or has the
    /// wrong type: `job_id` and `job` non-empty strings, `kwargs` and `events`
    /// objects (events map to arrays of strings), `state` an object;
    /// `metadata` may be absent (the original reads it with a default), and a
    /// null `metadata` or `state` counts as `{}`. Unknown extra fields are kept
    /// out of the re-serialized payload, like the original.
    static Job from_payload(std::string_view payload, std::string_view queue_name,
                            Connection conn = global_connection());

    /// The job's id (`job_id`, uuid4 hex when enqueued by retools).
    const std::string& id() const noexcept { return id_; }
    /// The job's name (`job`): `"<module>:<function>"` by convention.
    const std::string& name() const noexcept { return name_; }
    /// The queue it came from or goes to (short name, e.g. `main`).
    const std::string& queue() const noexcept { return queue_; }
    /// The Redis key of that queue, `retools:queue:<queue>`.
    std::string queue_key() const;
    /// Keyword arguments for the job function (a JSON object).
    const nlohmann::json& kwargs() const noexcept { return kwargs_; }
    /// Event name → handler names, e.g. `{"job_failure": ["myapp.jobs:save_error"]}`.
    const nlohmann::json& events() const noexcept { return events_; }
    /// The handler names subscribed to `event`, in order (empty when none).
    std::vector<std::string> handlers(std::string_view event) const;
    /// Free-form metadata given at enqueue (a JSON object).
    nlohmann::json& metadata() noexcept { return metadata_; }
    const nlohmann::json& metadata() const noexcept { return metadata_; }
    /// Mutable state, saved when the job is re-enqueued (a JSON object).
    nlohmann::json& state() noexcept { return state_; }
    const nlohmann::json& state() const noexcept { return state_; }
    /// The exact text this job was parsed from (empty for a Job built otherwise).
    const std::string& payload() const noexcept { return payload_; }
    /// The connection enqueue() uses.
    const Connection& connection() const noexcept { return conn_; }

    /// The payload as a JSON value, with the current state and metadata.
    nlohmann::json to_dict() const;
    /// The payload text, written the way Python's `json.dumps` writes it
    /// (`", "` and `": "` separators, non-ASCII as `\uXXXX`), fields in the
    /// original's order: job_id, job, kwargs, events, metadata, state.
    /// Throws QueueError if state or metadata stopped being an object or hold
    /// a non-finite number.
    std::string to_json() const;

    /// Puts the job (with its current state) at the tail of its queue:
    /// `RPUSH retools:queue:<queue> <to_json()>` and `SADD retools:queues <queue>`
    /// in one round trip. Returns the id.
    std::string enqueue() const;

    /// Retries made so far (`state["retried"]`, 0 when absent).
    int retries_done() const;
    /// The longest delay before the next retry when the job may be tried again
    /// after a failure (`metadata["retries"]` > retries_done()):
    /// `retry_backoff * 2^retries_done()` seconds, at most `retry_max_delay`;
    /// nullopt otherwise. A worker waits a random time between half and all
    /// of it (jitter).
    /// Throws QueueError when those metadata fields have the wrong type.
    std::optional<std::chrono::duration<double>> next_retry_delay() const;
    /// `metadata["result_ttl"]` when the job's result should be stored; nullopt
    /// when absent or 0. Throws QueueError when it is not a non-negative number.
    std::optional<std::chrono::seconds> result_ttl() const;

private:
    friend class QueueManager;
    explicit Job(Connection conn) : conn_(std::move(conn)) {}

    std::string id_;
    std::string name_;
    std::string queue_;
    nlohmann::json kwargs_ = nlohmann::json::object();
    nlohmann::json events_ = nlohmann::json::object();
    nlohmann::json metadata_ = nlohmann::json::object();
    nlohmann::json state_ = nlohmann::json::object();
    std::string payload_;
    Connection conn_;
};

}  // namespace retools
