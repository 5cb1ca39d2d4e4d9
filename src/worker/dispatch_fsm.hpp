#pragma once
// The worker's dispatch decisions as a state machine with no I/O: what to
// take, when to beat, recover, wait, back off and stop. Worker::work() feeds
// it what happened (requests, finished jobs, replies, the clock) and performs
// the action it returns, then resumes it with the result. Every decision is
// thereby testable without Redis, threads or signals.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include <retools/worker.hpp>

#include "worker/outcome.hpp"

namespace retools::detail {

using DispatchClock = std::chrono::steady_clock;

/// What the dispatch loop works with; fixed for one work() call.
struct DispatchConfig {
    /// Jobs run at once (threads, or child processes). Default 1.
    std::size_t concurrency = 1;
    /// Fork mode: no prefetching. Default false.
    bool fork_mode = false;
    /// Thread mode: take as many extra jobs as run in this long (0 = none). Default 0.
    std::chrono::milliseconds prefetch_window{0};
    /// Cap on prefetched jobs (0 = 10000). Default 0.
    std::size_t max_prefetch = 0;
    /// Take no more than this many jobs in all (0 = no limit). Default 0.
    std::size_t max_jobs = 0;
    /// Stop once every queue is empty and nothing runs. Default false.
    bool burst = false;
    /// Longest wait between rounds while nothing happens. Default 5 s.
    std::chrono::milliseconds interval{5000};
    /// How often the heartbeat is written and dead workers are looked for. Default 5 s.
    std::chrono::milliseconds heartbeat_interval{5000};
    /// A heartbeat's lifetime; every processing list is scanned each 10 of them. Default 30 s.
    std::chrono::milliseconds heartbeat_timeout{30000};
    /// Longest time between two looks for due periodic jobs (the loop also
    /// wakes at the earliest next run). Default 0: never look (the worker
    /// passes WorkerOptions::periodic_poll).
    std::chrono::milliseconds periodic_poll{0};
};

/// Requests made to the worker (stop(), pause(), signals), as seen at the start of a round.
struct DispatchRequests {
    bool stop_now = false;       // SIGTERM/SIGINT, stop(false): TERM running job processes, then stop
    bool stop_graceful = false;  // SIGQUIT, stop(true): finish what runs, then stop
    bool paused = false;         // SIGUSR2 / pause() until SIGCONT / resume(): take nothing
    bool kill_children = false;  // SIGUSR1: TERM running job processes once
};

/// What happened: the input of DispatchFsm::resume().
struct DispatchEvent {
    enum class Kind {
        woke,              // a round begins (first call, and after poll, wait and pause)
        done,              // the last action was performed
        timeouts_checked,  // check_timeouts performed: `next_check`
        backlog_taken,     // take_backlog performed: `count` jobs requeued
        resynced,          // resync succeeded
        resync_failed,     // resync failed (a Redis error): tried again next round
        scanned,           // recover succeeded
        scan_failed,       // recover failed (a Redis error)
        fetched,           // exchange succeeded: `count` jobs taken, `kept`
        fetch_failed,      // exchange failed (a Redis error): `kept`
        periodic_checked,  // promote_periodic performed (or failed): look again at `next_check`
    };
    Kind kind = Kind::done;
    // woke:
    DispatchClock::time_point now{};
    DispatchRequests requests{};
    std::span<FinishedJob> finished{};  // jobs finished since the last round; statuses may be rewritten
    std::size_t unstarted = 0;          // fork mode: jobs that could not be started
    std::uint64_t master_switches = 0;  // Connection::master_switches()
    // backlog_taken, fetched:
    std::size_t count = 0;
    // fetched, fetch_failed: finish operations are held back (a key of the wrong type)
    bool kept = false;
    // timeouts_checked: when the executor wants to enforce job deadlines again;
    // periodic_checked: when the next periodic job is due (capped by periodic_poll)
    DispatchClock::time_point next_check = DispatchClock::time_point::max();
};

/// What to do next: the output of DispatchFsm::resume(), and what to resume it with.
struct DispatchAction {
    enum class Kind {
        signal_jobs,        // send `signal` to every running job process → done
        check_timeouts,     // enforce job deadlines → timeouts_checked
        requeue_unstarted,  // put the unstarted jobs back at their queue's head; back off `delay` → done
        finish,             // record the finished jobs (statuses are final now) → done
        take_backlog,       // requeue the jobs submitted but not started → backlog_taken
        resync,             // requeue what our processing list holds unseen → resynced / resync_failed
        recover,            // recover dead workers' jobs (`full_scan`) → scanned / scan_failed
        promote_periodic,   // enqueue the due periodic jobs → periodic_checked
        exchange,           // finish, beat (`beat`, `busy`), take up to `count` → fetched / fetch_failed
        start_jobs,         // submit the `count` jobs just taken → done
        pause,              // after a Redis error: wait `delay`, unless a request comes → woke
        wait,               // wait (see below) → woke
        poll,               // look again at once → woke
        stop,               // leave the loop
    };
    Kind kind = Kind::poll;
    int signal = 0;                     // signal_jobs
    std::chrono::milliseconds delay{};  // requeue_unstarted (backoff), pause
    std::size_t count = 0;              // exchange (jobs to take), start_jobs, requeue_unstarted
    bool full_scan = false;             // recover: every processing list, not only stale heartbeats
    bool idle = false;                  // exchange: nothing runs after it
    bool beat = false;                  // exchange: write the heartbeat, with `busy` jobs running
    std::size_t busy = 0;               // exchange
    bool resend = false;                // exchange: send the held-back operations again first
    // wait: until min(now + interval, deadline), or earlier on a request, a
    // queue holding a job (`arm_waiter`: queues came up empty, watch them), or
    // `wake_after` finished jobs (fewer wait at most the acknowledgement delay).
    DispatchClock::time_point deadline = DispatchClock::time_point::max();
    std::chrono::milliseconds interval{};
    bool arm_waiter = false;
    std::size_t wake_after = 1;
};

/// The dispatch loop's decisions. Not thread-safe: one caller, the loop.
class DispatchFsm {
public:
    /// A stop_now grace period: job processes get TERM, then KILL this long after.
    static constexpr std::chrono::seconds stop_grace{10};
    /// Fork mode: pauses after a job that could not be started, doubling up to the cap.
    static constexpr std::chrono::milliseconds backoff_min{50};
    static constexpr std::chrono::milliseconds backoff_max{5000};
    /// Held-back finish operations are sent again this often.
    static constexpr std::chrono::milliseconds kept_retry{200};

    DispatchFsm(const DispatchConfig& config, DispatchClock::time_point now, std::uint64_t master_switches);

    /// Takes what happened, returns what to do next.
    DispatchAction resume(const DispatchEvent& event);

    /// While waiting: whether `pending` finished jobs are worth waking for.
    bool enough(std::size_t pending) const;

    /// Jobs taken and not yet finished (running, or waiting for a thread).
    std::size_t in_flight() const noexcept { return in_flight_; }
    /// Extra jobs to take beyond free threads, from the average job duration.
    std::size_t prefetch() const;
    /// What work() returns.
    const WorkSummary& summary() const noexcept { return summary_; }
    /// Redis errors of the exchange since it last succeeded.
    int failures_in_a_row() const noexcept { return failures_; }
    /// The fork-mode backoff now in force (0 once jobs run again).
    std::chrono::milliseconds backoff() const noexcept { return backoff_; }

private:
    enum class Step {
        kill,
        stop_term,
        escalate,
        timeouts,
        unstarted,
        finish,
        backlog,
        plan,
        recover,
        periodic,
        exchange,
        end
    };

    void begin_round(const DispatchEvent& event);
    DispatchAction advance(Step from);
    DispatchAction after_fetch(const DispatchEvent& event);
    DispatchAction end_round();
    bool wants_refill(std::size_t load, std::size_t pf) const;
    void account(FinishedJob& done);

    DispatchConfig config_;
    Step next_ = Step::kill;
    WorkSummary summary_;

    // Across rounds.
    std::size_t in_flight_ = 0;
    std::size_t taken_total_ = 0;
    double avg_seconds_ = -1;  // average job duration, for the prefetch window
    bool killed_for_stop_ = false;
    bool escalated_ = false;
    DispatchClock::time_point kill_deadline_ = DispatchClock::time_point::max();
    bool resync_ = false;        // a fetch failed: its jobs may sit unseen in our processing list
    bool queues_empty_ = false;  // the last fetch found nothing more to take
    int failures_ = 0;
    std::uint64_t master_switches_;
    DispatchClock::time_point next_beat_;
    DispatchClock::time_point next_recovery_;
    DispatchClock::time_point next_full_scan_;
    DispatchClock::time_point next_periodic_;  // max() when periodic_poll is 0
    std::chrono::milliseconds backoff_{0};
    DispatchClock::time_point backoff_until_ = DispatchClock::time_point::min();
    bool batch_pending_ = false;  // finish operations wait to be sent
    bool kept_ = false;           // finish operations held back for a key of the wrong type
    DispatchClock::time_point kept_retry_at_ = DispatchClock::time_point::min();

    // This round.
    DispatchClock::time_point now_{};
    DispatchRequests requests_{};
    bool stopping_ = false;
    std::span<FinishedJob> finished_{};
    std::size_t unstarted_ = 0;
    DispatchClock::time_point timeout_check_ = DispatchClock::time_point::max();
    bool limit_reached_ = false;
    bool backing_off_ = false;
    std::size_t pf_ = 0;
    std::size_t want_ = 0;
    std::size_t got_ = 0;
    bool beat_due_ = false;
    bool had_kept_ = false;
    bool full_scan_ = false;
};

}  // namespace retools::detail
