// The worker's dispatch decisions (see dispatch_fsm.hpp). A round walks the
// steps in order; a step that needs I/O returns its action and records where
// to go on, and the event that reports the result resumes from there.

#include "worker/dispatch_fsm.hpp"

#include <signal.h>

#include <algorithm>

namespace retools::detail {

using Action = DispatchAction;
using Kind = DispatchEvent::Kind;

DispatchFsm::DispatchFsm(const DispatchConfig& config, DispatchClock::time_point now,
                         std::uint64_t master_switches)
    : config_(config),
      master_switches_(master_switches),
      // Heartbeats ride on the fetch; recovery of dead workers runs as often.
      next_beat_(now + config.heartbeat_interval),
      next_recovery_(next_beat_),
      next_full_scan_(now + 10 * config.heartbeat_timeout),
      next_periodic_(config.periodic_poll.count() > 0 ? now : DispatchClock::time_point::max()) {
    config_.concurrency = std::max<std::size_t>(config_.concurrency, 1);
}

std::size_t DispatchFsm::prefetch() const {
    if (config_.fork_mode || config_.prefetch_window.count() == 0) return 0;
    const std::size_t cap = config_.max_prefetch == 0 ? 10000 : config_.max_prefetch;
    if (avg_seconds_ < 0) return std::min<std::size_t>(cap, 4);
    const double window = std::chrono::duration<double>(config_.prefetch_window).count();
    const double n = window / std::max(avg_seconds_, 1e-7);
    return n >= static_cast<double>(cap) ? cap : static_cast<std::size_t>(n);
}

bool DispatchFsm::wants_refill(std::size_t load, std::size_t pf) const {
    return load < config_.concurrency || (pf > 0 && load <= config_.concurrency + pf / 2);
}

bool DispatchFsm::enough(std::size_t pending) const {
    if (pending == 0) return false;
    const std::size_t left = in_flight_ - std::min(pending, in_flight_);
    if (stopping_ || limit_reached_ || left == 0) return true;
    // Queues known empty: look again only when a thread idles, not after
    // every completion (blocking mode is told of new jobs anyway).
    return queues_empty_ ? left < config_.concurrency : wants_refill(left, pf_);
}

void DispatchFsm::begin_round(const DispatchEvent& event) {
    now_ = event.now;
    requests_ = event.requests;
    stopping_ = requests_.stop_now || requests_.stop_graceful;
    finished_ = event.finished;
    unstarted_ = event.unstarted;
    timeout_check_ = DispatchClock::time_point::max();
    want_ = got_ = 0;
    beat_due_ = false;
    // A Sentinel failover may have lost the acknowledgement of finished jobs
    // (sent to the old master after its replica detached): their entries then
    // sit in our processing list on the new master.
    if (event.master_switches != master_switches_) {
        master_switches_ = event.master_switches;
        resync_ = true;
    }
}

void DispatchFsm::account(FinishedJob& done) {
    --in_flight_;
    auto& o = done.outcome;
    if (o.status == JobStatus::failed && killed_for_stop_ &&
        (o.killed_by == SIGTERM || o.killed_by == SIGKILL))
        o.status = JobStatus::requeue;  // stopped by us, not failed: run it again later
    avg_seconds_ = avg_seconds_ < 0 ? o.seconds : 0.8 * avg_seconds_ + 0.2 * o.seconds;
    switch (o.status) {
        case JobStatus::succeeded:
            ++summary_.succeeded;
            break;
        case JobStatus::failed:
        case JobStatus::retry:
            ++summary_.failed;
            break;
        case JobStatus::aborted:
            ++summary_.aborted;
            break;
        case JobStatus::requeue:
            ++summary_.requeued;
            break;
    }
}

DispatchAction DispatchFsm::resume(const DispatchEvent& event) {
    switch (event.kind) {
        case Kind::woke:
            begin_round(event);
            return advance(Step::kill);
        case Kind::done:
            return advance(next_);
        case Kind::timeouts_checked:
            timeout_check_ = event.next_check;
            return advance(Step::unstarted);
        case Kind::backlog_taken:
            in_flight_ -= event.count;
            summary_.requeued += event.count;
            if (event.count > 0) batch_pending_ = true;
            return advance(Step::plan);
        case Kind::resynced:
            resync_ = false;
            return advance(Step::recover);
        case Kind::resync_failed:
            return advance(Step::recover);
        case Kind::scanned:
            if (full_scan_) next_full_scan_ = now_ + 10 * config_.heartbeat_timeout;
            next_recovery_ = now_ + config_.heartbeat_interval;
            return advance(Step::periodic);
        case Kind::scan_failed:
            next_recovery_ = now_ + config_.heartbeat_interval;
            return advance(Step::periodic);
        case Kind::periodic_checked:
            next_periodic_ = std::clamp(event.next_check, now_, now_ + config_.periodic_poll);
            return advance(Step::exchange);
        case Kind::fetched:
        case Kind::fetch_failed:
            return after_fetch(event);
    }
    return advance(next_);
}

DispatchAction DispatchFsm::advance(Step from) {
    switch (from) {
        case Step::kill:
            if (requests_.kill_children) {
                next_ = Step::stop_term;
                return Action{.kind = Action::Kind::signal_jobs, .signal = SIGTERM};
            }
            [[fallthrough]];
        case Step::stop_term:
            if (requests_.stop_now && !killed_for_stop_) {
                killed_for_stop_ = true;
                kill_deadline_ = now_ + stop_grace;
                next_ = Step::escalate;
                return Action{.kind = Action::Kind::signal_jobs, .signal = SIGTERM};
            }
            [[fallthrough]];
        case Step::escalate:
            if (killed_for_stop_ && !escalated_ && now_ >= kill_deadline_) {
                escalated_ = true;  // a job process that ignores TERM
                next_ = Step::timeouts;
                return Action{.kind = Action::Kind::signal_jobs, .signal = SIGKILL};
            }
            [[fallthrough]];
        case Step::timeouts:
            next_ = Step::unstarted;
            return Action{.kind = Action::Kind::check_timeouts};
        case Step::unstarted:
            if (!finished_.empty()) backoff_ = std::chrono::milliseconds(0);  // jobs run again
            if (unstarted_ > 0) {
                // Not run: back at the head of the queue, and a pause.
                backoff_ = std::clamp(backoff_ * 2, backoff_min, backoff_max);
                backoff_until_ = now_ + backoff_;
                in_flight_ -= unstarted_;
                batch_pending_ = true;
                next_ = Step::finish;
                return Action{
                    .kind = Action::Kind::requeue_unstarted, .delay = backoff_, .count = unstarted_};
            }
            [[fallthrough]];
        case Step::finish:
            if (!finished_.empty()) {
                for (auto& done : finished_) account(done);
                batch_pending_ = true;
                next_ = Step::backlog;
                return Action{.kind = Action::Kind::finish, .count = finished_.size()};
            }
            [[fallthrough]];
        case Step::backlog:
            // max_jobs reached: take no more, but finish what was taken.
            limit_reached_ = config_.max_jobs && taken_total_ >= config_.max_jobs;
            if (stopping_) return Action{.kind = Action::Kind::take_backlog};
            [[fallthrough]];
        case Step::plan:
            pf_ = prefetch();
            backing_off_ = now_ < backoff_until_;
            want_ = 0;
            if (!stopping_ && !limit_reached_ && !requests_.paused && !backing_off_ &&
                wants_refill(in_flight_, pf_)) {
                // Bounded: the script unpacks the batch onto Lua's stack (8000 slots).
                want_ = std::min<std::size_t>(config_.concurrency + pf_ - in_flight_, 4096);
                if (config_.max_jobs) want_ = std::min(want_, config_.max_jobs - taken_total_);
            }
            // A fetch whose reply was lost may have moved jobs to our processing
            // list that we never saw; with nothing in flight, all there is such.
            if (resync_ && in_flight_ == 0 && !batch_pending_) return Action{.kind = Action::Kind::resync};
            [[fallthrough]];
        case Step::recover:
            // Dead workers' jobs: stale heartbeats every beat, every processing
            // list now and then (those of workers that never beat).
            if (!stopping_ && now_ >= next_recovery_) {
                full_scan_ = now_ >= next_full_scan_;
                return Action{.kind = Action::Kind::recover, .full_scan = full_scan_};
            }
            [[fallthrough]];
        case Step::periodic:
            // Due periodic jobs go to their queues before this round takes jobs.
            if (!stopping_ && !requests_.paused && now_ >= next_periodic_) {
                next_ = Step::exchange;
                return Action{.kind = Action::Kind::promote_periodic};
            }
            [[fallthrough]];
        case Step::exchange: {
            beat_due_ = now_ >= next_beat_;
            const bool resend = kept_ && now_ >= kept_retry_at_;
            if (want_ > 0 || batch_pending_ || beat_due_ || resend) {
                if (resend) {
                    kept_ = false;  // moved into the batch
                    batch_pending_ = true;
                }
                had_kept_ = kept_;
                return Action{.kind = Action::Kind::exchange,
                              .count = want_,
                              .idle = in_flight_ == 0,
                              .beat = beat_due_,
                              .busy = in_flight_,
                              .resend = resend};
            }
            [[fallthrough]];
        }
        case Step::end:
            return end_round();
    }
    return end_round();
}

DispatchAction DispatchFsm::after_fetch(const DispatchEvent& event) {
    if (event.kind == Kind::fetch_failed) {
        kept_ = event.kept;
        ++failures_;
        resync_ = true;
        if (stopping_ && in_flight_ == 0 && failures_ > 3)
            return Action{.kind = Action::Kind::stop};  // leave the rest to recovery
        return Action{.kind = Action::Kind::pause,
                      .delay = std::chrono::milliseconds(std::min(100 * failures_, 2000))};
    }
    if (!had_kept_ && event.kept) kept_retry_at_ = now_ + kept_retry;
    kept_ = event.kept;
    if (beat_due_) next_beat_ = now_ + config_.heartbeat_interval;
    batch_pending_ = false;
    failures_ = 0;
    got_ = event.count;
    taken_total_ += got_;
    in_flight_ += got_;
    next_ = Step::end;
    if (got_ > 0) return Action{.kind = Action::Kind::start_jobs, .count = got_};
    return end_round();
}

DispatchAction DispatchFsm::end_round() {
    next_ = Step::kill;
    if ((stopping_ || limit_reached_) && in_flight_ == 0 && !batch_pending_)
        return Action{.kind = Action::Kind::stop};
    const bool drained = want_ > 0 && got_ < want_;  // every queue came up empty
    if (want_ > 0) queues_empty_ = drained;
    if (config_.burst && drained && in_flight_ == 0 && !batch_pending_)
        return Action{.kind = Action::Kind::stop};
    if (got_ > 0 && !drained)
        return Action{.kind = Action::Kind::poll};  // there may be more, and room for it

    Action wait{.kind = Action::Kind::wait, .interval = config_.interval, .arm_waiter = drained};
    auto deadline = std::min({next_beat_, next_recovery_, timeout_check_});
    if (!stopping_ && !requests_.paused) deadline = std::min(deadline, next_periodic_);
    if (killed_for_stop_ && !escalated_) deadline = std::min(deadline, kill_deadline_);
    if (kept_) deadline = std::min(deadline, kept_retry_at_);
    if (backing_off_) deadline = std::min(deadline, backoff_until_);
    wait.deadline = deadline;
    // enough() only turns true as jobs complete: the executors wake the loop
    // once, at the first count that is enough (found by bisection).
    std::size_t lo = 1, hi = std::max<std::size_t>(in_flight_, 1);
    while (lo < hi) {
        const std::size_t mid = lo + (hi - lo) / 2;
        if (enough(mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    wait.wake_after = lo;
    return wait;
}

}  // namespace retools::detail
