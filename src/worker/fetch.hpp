#pragma once
// Reliable fetch: taking jobs into the processing list, acknowledging finished
// ones (with counters and the heartbeat) in the same round trip, and waiting
// for jobs without taking any.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <retools/connection.hpp>

#include "worker/counters.hpp"
#include "worker/outcome.hpp"
#include "worker/taken_job.hpp"

namespace retools::detail {

/// The finish bookkeeping of finished jobs, encoded as script arguments; sent
/// with the next fetch so finishing costs no round trip of its own.
class FinishBatch {
public:
    /// Records a finished job (removal from the processing list, failed-list
    /// entry, retry, stored result).
    void add(FinishedJob&& done, std::string_view worker_id, double now);
    /// Puts a job that was taken but not run back at the head of its queue.
    void requeue(const TakenJob& job);
    bool empty() const noexcept { return args_.empty(); }
    /// Copies the operation starting at argument `at` (with what follows it) into `into`.
    void copy_group(std::size_t at, FinishBatch& into) const;
    /// Moves `other`'s operations to the end of this batch.
    void append(FinishBatch& other);
    void clear() noexcept { args_.clear(); }
    const std::vector<std::string>& args() const noexcept { return args_; }

private:
    std::vector<std::string> args_;
};

/// A heartbeat to write with an exchange.
struct Beat {
    std::string json;  // the value of retools:heartbeat:<id>
    long long ttl_ms = 30000;
    std::string queues;   // for re-registering: `:queues`
    std::string started;  // `:started`
    std::size_t threads = 1;
};

/// Moves jobs from the queues (in priority order) to the processing list and
/// applies finish bookkeeping, atomically, in one round trip. On a Redis
/// Cluster (one processing list per queue, see queue/keys.hpp) the same work
/// takes a few pipelined round trips: failed entries and results first, then
/// one script per queue (finish, promote, take), then counters and heartbeat.
/// Made by the worker's topology (WorkerTopology::make_fetch).
class ReliableFetch {
public:
    virtual ~ReliableFetch() = default;
    ReliableFetch(const ReliableFetch&) = delete;
    ReliableFetch& operator=(const ReliableFetch&) = delete;

    /// Applies `finished` (and counts it), writes `beat` when given
    /// (registering the worker again if it is missing from retools:workers),
    /// promotes due delayed jobs, then takes up to `count` jobs into `out`.
    /// `idle`: nothing will be running after this call, so the
    /// `retools:worker:<id>` key is deleted when nothing is taken. Returns a
    /// warning to log ("" when none): queues skipped or jobs kept because a
    /// key has the wrong type. Operations that could not be applied for a key
    /// of the wrong type (their jobs stay in the processing list) are copied
    /// to `kept`, to be sent again later.
    virtual std::string exchange(const FinishBatch& finished, std::size_t count, bool idle, const Beat* beat,
                                 std::vector<TakenJob>& out, FinishBatch* kept) = 0;

protected:
    ReliableFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues)
        : conn_(std::move(conn)), worker_id_(std::move(worker_id)), queues_(queues) {}
    /// The counters' day and hour at `now`: formatted once per hour, not per call.
    const StatPeriods& periods(double now);

    Connection conn_;
    std::string worker_id_;
    std::vector<std::string> queues_;

private:
    StatPeriods periods_;
    double period_end_ = 0;  // when periods_ stops being this hour
};

/// ReliableFetch on one node: one script per exchange (src/worker/lua/fetch.lua).
std::unique_ptr<ReliableFetch> make_single_node_fetch(Connection conn, std::string worker_id,
                                                      const std::vector<std::string>& queues);
/// ReliableFetch on a Redis Cluster: ordered pipelines over the slots.
std::unique_ptr<ReliableFetch> make_cluster_fetch(Connection conn, std::string worker_id,
                                                  const std::vector<std::string>& queues);

class WorkerTopology;

/// Waits, without taking anything, until one of the queues holds a job: one
/// thread and connection per queue blocked in `BLMOVE q q LEFT LEFT` (moves
/// the head onto itself: the list is unchanged, so a worker killed while
/// waiting loses nothing). Woken waits are cancelled with CLIENT UNBLOCK.
class QueueWaiter {
public:
    /// `topology`: that of `conn` (the queues' keys, how long one wait may block).
    QueueWaiter(const Connection& conn, const WorkerTopology& topology,
                const std::vector<std::string>& queues, std::chrono::milliseconds block,
                std::function<void()> on_ready);
    ~QueueWaiter();
    QueueWaiter(const QueueWaiter&) = delete;
    QueueWaiter& operator=(const QueueWaiter&) = delete;

    /// Starts (or keeps) waiting; on_ready is called once a queue holds a job.
    void arm();

private:
    struct Slot;
    void run(Slot& slot);

    Connection control_;
    std::chrono::milliseconds block_;
    std::function<void()> on_ready_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t generation_ = 0;
    bool stop_ = false;
    std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace retools::detail
