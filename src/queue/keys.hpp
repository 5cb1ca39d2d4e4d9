#pragma once
// Redis key names of the job queue. The first group is the original's layout
// (shared with Python retools); the second is what retools adds for reliable
// delivery, failures, retries and results.
//
// On a Redis Cluster (`cluster`), the keys a script moves one queue's jobs
// between carry the queue name as hash tag: `retools:queue:{<name>}`, a
// worker's processing list for it `retools:processing:{<name>}:<worker>`,
// its scheduled jobs `retools:delayed:{<name>}`. They share a slot; different
// queues spread over the masters. Every other key keeps its name there and
// is written with commands of its own. The three functions taking `cluster`
// are the only place where the two layouts differ.

#include <string>
#include <string_view>

namespace retools::detail::queue_keys {

// --- the original's layout ---------------------------------------------------
inline constexpr std::string_view queue_prefix = "retools:queue:";    // + name: list of payloads
inline constexpr std::string_view queues = "retools:queues";          // set of queue names
inline constexpr std::string_view workers = "retools:workers";        // set of live worker ids
inline constexpr std::string_view worker_prefix = "retools:worker:";  // + id [+ ":started" | ":queues"]

/// List of a queue's payloads: `retools:queue:<name>`, on a cluster `retools:queue:{<name>}`.
inline std::string queue(std::string_view name, bool cluster) {
    std::string out(queue_prefix);
    if (!cluster) return out.append(name);
    out += '{';
    out.append(name);
    out += '}';
    return out;
}
inline std::string worker(std::string_view id) {
    return std::string(worker_prefix).append(id);
}
inline std::string worker_started(std::string_view id) {
    return worker(id).append(":started");
}
inline std::string worker_queues(std::string_view id) {
    return worker(id).append(":queues");
}

// --- added by retools for C++ ------------------------------------------------
/// List of entries `<queue>\n<payload>` a worker has taken and not finished
/// (reliable fetch): `retools:processing:<worker id>`, one for all its queues;
/// on a cluster one per queue, `retools:processing:{<queue>}:<worker id>`.
inline constexpr std::string_view processing_prefix = "retools:processing:";
inline std::string processing(std::string_view worker_id, std::string_view queue_name, bool cluster) {
    std::string out(processing_prefix);
    if (!cluster) return out.append(worker_id);
    out += '{';
    out.append(queue_name);
    out.append("}:");
    return out.append(worker_id);
}
/// List of failed jobs (one for all queues, also on a cluster): JSON {"payload": "<original text>", "queue":
/// name, "error": text, "worker": id, "failed_at": float seconds}.
inline constexpr std::string_view failed = "retools:failed";
inline constexpr std::string_view failed_trimmed =
    "retools:stat:failed_trimmed";  // entries the bound removed
/// Sorted set of jobs not yet due (scheduled enqueues and retries): member
/// JSON {"queue": name, "payload": "<payload text>"}, score = due time (float
/// seconds). `retools:delayed` for all queues; on a cluster one per queue,
/// `retools:delayed:{<queue>}`, beside the queue it is promoted to.
inline constexpr std::string_view delayed_all = "retools:delayed";
inline std::string delayed(std::string_view queue_name, bool cluster) {
    std::string out(delayed_all);
    if (!cluster) return out;
    out.append(":{");
    out.append(queue_name);
    out += '}';
    return out;
}
/// A finished job's outcome (when its metadata has "result_ttl"), with that TTL:
/// a list holding one JSON element, {"status": "ok", "result": <json>} or
/// {"status": "failed", "error": text}. A list rather than a string so that
/// QueueManager::wait_for_result can block on it (BLMOVE onto itself) instead of polling.
inline constexpr std::string_view result_prefix = "retools:result:";  // + job id
inline std::string result(std::string_view job_id) {
    return std::string(result_prefix).append(job_id);
}

// --- workflows: periodic and unique jobs -------------------------------------
/// Hash of periodic job definitions: id → JSON {"events", "job", "kwargs",
/// "metadata", "queue", "schedule"} (nlohmann's dump, keys sorted).
/// `retools:periodic`; on a cluster one per queue, `retools:periodic:{<queue>}`.
inline constexpr std::string_view periodic_all = "retools:periodic";
inline std::string periodic(std::string_view queue_name, bool cluster) {
    std::string out(periodic_all);
    if (!cluster) return out;
    out.append(":{");
    out.append(queue_name);
    out += '}';
    return out;
}
/// Sorted set of the periodic jobs' next runs: id → Unix seconds.
/// `retools:periodic:due`; on a cluster `retools:periodic:due:{<queue>}`.
inline std::string periodic_due(std::string_view queue_name, bool cluster) {
    std::string out(periodic_all);
    out.append(":due");
    if (!cluster) return out;
    out.append(":{");
    out.append(queue_name);
    out += '}';
    return out;
}
/// A unique job's claim, holding the id of the job that has it, with the
/// TTL EnqueueOptions::unique_for: `retools:unique:<queue>:<unique key>`, on
/// a cluster `retools:unique:{<queue>}:<unique key>` (the queue's slot).
inline constexpr std::string_view unique_prefix = "retools:unique:";
inline std::string unique(std::string_view queue_name, std::string_view key, bool cluster) {
    std::string out(unique_prefix);
    if (cluster) out += '{';
    out.append(queue_name);
    if (cluster) out += '}';
    out += ':';
    return out.append(key);
}

/// The worker's concurrency (threads or children), beside `:started` and
/// `:queues`: how many of a dead worker's entries may have been running.
inline std::string worker_threads(std::string_view id) {
    return worker(id).append(":threads");
}

// --- worker fleet: liveness, poison quarantine, counters -----------------------
/// String JSON of a live worker (see docs/worker-fleet.md), TTL = heartbeat_timeout.
inline constexpr std::string_view heartbeat_prefix = "retools:heartbeat:";  // + worker id
inline std::string heartbeat(std::string_view worker_id) {
    return std::string(heartbeat_prefix).append(worker_id);
}
/// Sorted set: worker id → Unix time of its last beat (who to check for death).
inline constexpr std::string_view heartbeats = "retools:heartbeats";
/// Hash: SHA1 of a processing-list entry → times its holder died holding it.
inline constexpr std::string_view recoveries = "retools:recoveries";
/// Counters: + "processed" / "failed", then optionally ":<YYYY-MM-DD>" or ":<YYYY-MM-DDTHH>".
inline constexpr std::string_view stat_prefix = "retools:stat:";

}  // namespace retools::detail::queue_keys
