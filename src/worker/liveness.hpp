#pragma once
// Who is alive: the original's registry (retools:workers), heartbeats, and the
// recovery of dead workers' processing lists on any host.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail {

/// This machine's host name (as Python's socket.gethostname()).
std::string hostname();

/// `<boot id>/<pid namespace>`: two processes with the same value see the
/// same pids, so a pid that is gone there belongs to a dead process.
const std::string& pid_space();

/// How recovery treats the jobs of the processing list it puts back.
enum class RecoverMode {
    /// A live worker resyncing its own list after a lost reply: no liveness
    /// check, no death counted.
    resync,
    /// Leftovers of a dead predecessor under our own id (heartbeat claimed): deaths counted.
    own,
    /// Another worker, only if it is dead (no heartbeat, or the heartbeat
    /// equals `expected_heartbeat`, judged dead by its pid): deaths counted.
    dead,
};

/// What one recovery did.
struct Recovered {
    bool alive = false;           // the owner turned out to be alive: nothing touched
    std::size_t requeued = 0;     // jobs back at the head of their queue
    std::size_t quarantined = 0;  // jobs moved to retools:failed (poison, or refused by their queue)
};

/// Puts every job of `worker_id`'s processing list back at the head of its
/// queue, in order, atomically with the liveness check (one script: at most
/// one recoverer per dead worker at a time). Counts per entry how often its
/// holder died holding it; past `max_recoveries` (0 = never) the job goes to
/// retools:failed instead. With `unregister`, also removes the worker's keys.
Recovered recover_worker(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                         std::size_t max_recoveries, bool unregister,
                         std::string_view expected_heartbeat = {});
/// recover_worker on one node: one script, atomic with the liveness check.
Recovered recover_worker_on_node(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                                 std::size_t max_recoveries, bool unregister,
                                 std::string_view expected_heartbeat);
/// recover_worker on a Redis Cluster: per queue's processing list, death
/// counts and filed entries first, then one script moves the rest back (a
/// crash in between duplicates a job, never loses one).
Recovered recover_worker_on_cluster(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                                    std::size_t max_recoveries, bool unregister,
                                    std::string_view expected_heartbeat);

/// True when `heartbeat` (the JSON of a live key) names a process in our pid
/// space that is gone. For this process's own pid: true when the heartbeat is
/// not that of `own_instance` (the caller's run) nor of an id working here,
/// i.e. a previous process that had our pid.
bool heartbeat_owner_gone(std::string_view heartbeat, std::string_view own_instance = {});

/// Recovers dead workers' processing lists: the heartbeat set's stale members
/// and, with `full_scan`, every `retools:processing:*` list. Skips `self` and
/// ids working in this process. Returns what was done in total.
Recovered recover_dead_workers(const Connection& conn, std::chrono::milliseconds heartbeat_timeout,
                               std::size_t max_recoveries, bool full_scan);

/// The original's rule for the registry, plus recovery: unregisters this
/// host's workers whose process is gone and that have no live heartbeat
/// (requeueing their jobs). Entries of other hosts, and entries with a live
/// heartbeat, are never removed here.
std::size_t prune_dead_workers(const Connection& conn, std::size_t max_recoveries);

/// Claims the heartbeat of `worker_id` for `instance` (atomic SET unless
/// another live instance holds it); on success writes `heartbeat`. Returns
/// the foreign heartbeat when another instance holds it.
std::optional<std::string> claim_heartbeat(const Connection& conn, std::string_view worker_id,
                                           std::string_view instance, std::string_view heartbeat,
                                           std::chrono::milliseconds ttl);

/// Ids of the workers working in this process: two workers with one id
/// would share a processing list.
bool claim_worker_id(const std::string& id);
void release_worker_id(const std::string& id);
bool working_here(std::string_view id);
std::vector<std::string> split_queue_names(std::string_view text);

}  // namespace retools::detail
