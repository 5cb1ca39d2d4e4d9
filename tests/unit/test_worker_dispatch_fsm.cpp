// The worker's dispatch decisions, without Redis: a scripted world answers
// each action the state machine asks for, on a clock the test moves by hand.

#include <signal.h>

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "worker/dispatch_fsm.hpp"

namespace {

using namespace std::chrono_literals;
using retools::detail::DispatchAction;
using retools::detail::DispatchClock;
using retools::detail::DispatchConfig;
using retools::detail::DispatchEvent;
using retools::detail::DispatchFsm;
using retools::detail::DispatchRequests;
using retools::detail::FinishedJob;
using retools::detail::JobStatus;
using K = DispatchAction::Kind;
using E = DispatchEvent::Kind;

const DispatchClock::time_point t0 = DispatchClock::time_point{} + 1000h;

FinishedJob job(JobStatus status, double seconds = 0.01, int killed_by = 0) {
    FinishedJob f;
    f.outcome.status = status;
    f.outcome.seconds = seconds;
    f.outcome.killed_by = killed_by;
    return f;
}

// Answers the machine's actions as the loop would, with a queue of `queued`
// jobs and failures on demand; one round() runs from a wake-up to the action
// that ends the round (poll, wait, pause or stop).
struct World {
    explicit World(DispatchConfig config) : fsm(config, t0, 0) {}

    DispatchFsm fsm;
    DispatchClock::time_point now = t0;
    DispatchRequests requests;
    std::vector<FinishedJob> finished;
    std::size_t unstarted = 0;
    std::size_t queued = 0;
    std::size_t backlog = 0;  // jobs submitted but not started, returned by take_backlog
    std::uint64_t master_switches = 0;
    bool fail_exchange = false;
    bool fail_resync = false;
    bool fail_recover = false;
    bool keep = false;  // exchanges hold finish operations back
    std::chrono::milliseconds next_periodic_in{300};  // promote_periodic: the next run is due in this long
    std::vector<DispatchAction> actions;

    DispatchAction round() {
        actions.clear();
        DispatchEvent event{.kind = E::woke,
                            .now = now,
                            .requests = requests,
                            .finished = finished,
                            .unstarted = unstarted,
                            .master_switches = master_switches};
        requests.kill_children = false;  // consumed, as the loop does
        for (;;) {
            const DispatchAction a = fsm.resume(event);
            actions.push_back(a);
            event = {};
            switch (a.kind) {
                case K::poll:
                case K::wait:
                case K::pause:
                case K::stop:
                    finished.clear();
                    unstarted = 0;
                    return a;
                case K::check_timeouts:
                    event = {.kind = E::timeouts_checked};
                    break;
                case K::take_backlog:
                    event = {.kind = E::backlog_taken, .count = backlog};
                    backlog = 0;
                    break;
                case K::resync:
                    event = {.kind = fail_resync ? E::resync_failed : E::resynced};
                    break;
                case K::recover:
                    event = {.kind = fail_recover ? E::scan_failed : E::scanned};
                    break;
                case K::promote_periodic:
                    event = {.kind = E::periodic_checked, .next_check = now + next_periodic_in};
                    break;
                case K::exchange:
                    if (fail_exchange) {
                        event = {.kind = E::fetch_failed};
                    } else {
                        const std::size_t n = std::min(a.count, queued);
                        queued -= n;
                        event = {.kind = E::fetched, .count = n, .kept = keep};
                    }
                    break;
                default:
                    break;  // signal_jobs, requeue_unstarted, finish, start_jobs: done
            }
        }
    }

    const DispatchAction* find(K kind) const {
        for (const auto& a : actions)
            if (a.kind == kind) return &a;
        return nullptr;
    }
    std::size_t count(K kind) const {
        return static_cast<std::size_t>(
            std::count_if(actions.begin(), actions.end(), [&](const auto& a) { return a.kind == kind; }));
    }
    // Jobs asked for in this round's exchange (0 if none).
    std::size_t asked() const {
        const auto* a = find(K::exchange);
        return a ? a->count : 0;
    }
};

DispatchConfig threads(std::size_t n) {
    return {.concurrency = n, .interval = 5s, .heartbeat_interval = 1s, .heartbeat_timeout = 5s};
}

TEST(WorkerDispatchFsm, FetchNeverAsksForMoreThanFreeSlots) {
    World w{threads(4)};
    w.queued = 100;
    EXPECT_EQ(w.round().kind, K::poll);  // took 4, there may be more
    EXPECT_EQ(w.asked(), 4u);
    ASSERT_NE(w.find(K::start_jobs), nullptr);
    EXPECT_EQ(w.find(K::start_jobs)->count, 4u);
    EXPECT_EQ(w.fsm.in_flight(), 4u);

    auto a = w.round();  // every thread busy: no fetch, wait for one to finish
    EXPECT_EQ(w.find(K::exchange), nullptr);
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_EQ(a.wake_after, 1u);

    for (std::size_t done = 1; done <= 3; ++done) {
        for (std::size_t i = 0; i < done; ++i) w.finished.push_back(job(JobStatus::succeeded));
        const std::size_t before = w.fsm.in_flight();
        w.round();
        EXPECT_EQ(w.asked(), done);
        EXPECT_LE(w.asked(), 4 - (before - done));
        EXPECT_EQ(w.fsm.in_flight(), 4u);
    }
    EXPECT_EQ(w.fsm.summary().succeeded, 6u);
}

TEST(WorkerDispatchFsm, PrefetchFollowsTheWindowAndItsCap) {
    auto config = threads(2);
    config.prefetch_window = 1s;
    World w{config};
    EXPECT_EQ(w.fsm.prefetch(), 4u);  // no duration known yet
    w.queued = 1000;
    w.round();
    EXPECT_EQ(w.asked(), 2u + 4u);
    EXPECT_EQ(w.fsm.in_flight(), 6u);

    // Jobs of 100 ms: a 1 s window holds 10 more.
    w.finished.push_back(job(JobStatus::succeeded, 0.1));
    w.round();
    EXPECT_EQ(w.fsm.prefetch(), 10u);
    EXPECT_EQ(w.asked(), 2u + 10u - 5u);
    EXPECT_EQ(w.fsm.in_flight(), 12u);

    // More than concurrency + prefetch/2 in flight: no refill yet.
    w.finished.push_back(job(JobStatus::succeeded, 0.1));
    w.finished.push_back(job(JobStatus::succeeded, 0.1));
    EXPECT_EQ(w.round().kind, K::wait);
    ASSERT_NE(w.find(K::exchange), nullptr);  // only to acknowledge the two
    EXPECT_EQ(w.asked(), 0u);
    EXPECT_EQ(w.fsm.in_flight(), 10u);

    auto capped = config;
    capped.max_prefetch = 3;
    World c{capped};
    c.queued = 100;
    c.round();
    EXPECT_EQ(c.asked(), 2u + 3u);

    // Very short jobs: at most 4096 asked for at once (the script's stack).
    auto huge = config;
    huge.prefetch_window = 1h;
    World h{huge};
    h.queued = 100000;
    h.round();
    h.finished.push_back(job(JobStatus::succeeded, 1e-9));
    h.round();
    EXPECT_EQ(h.fsm.prefetch(), 10000u);
    EXPECT_EQ(h.asked(), 4096u);
}

TEST(WorkerDispatchFsm, ForkModeNeverPrefetches) {
    auto config = threads(3);
    config.fork_mode = true;
    config.prefetch_window = 1s;
    World w{config};
    w.queued = 100;
    w.round();
    EXPECT_EQ(w.fsm.prefetch(), 0u);
    EXPECT_EQ(w.asked(), 3u);
}

TEST(WorkerDispatchFsm, ConnectionErrorsBackOffUpToTwoSecondsAndResetOnSuccess) {
    World w{threads(2)};
    w.fail_exchange = true;
    std::vector<long long> pauses;
    for (int i = 0; i < 25; ++i) {
        auto a = w.round();
        ASSERT_EQ(a.kind, K::pause);
        pauses.push_back(a.delay.count());
    }
    EXPECT_EQ(pauses[0], 100);
    EXPECT_EQ(pauses[1], 200);
    EXPECT_EQ(pauses[4], 500);
    EXPECT_EQ(pauses[19], 2000);
    EXPECT_EQ(pauses[24], 2000);
    EXPECT_EQ(w.fsm.failures_in_a_row(), 25);

    // Back: the lost replies may have moved jobs unseen: resync first.
    w.fail_exchange = false;
    w.queued = 1;
    w.round();
    EXPECT_NE(w.find(K::resync), nullptr);
    EXPECT_EQ(w.fsm.failures_in_a_row(), 0);
    w.fail_exchange = true;
    EXPECT_EQ(w.round().delay, 100ms);
}

TEST(WorkerDispatchFsm, ResyncRunsWithNothingInFlightUntilItSucceeds) {
    World w{threads(1)};
    w.queued = 1;
    w.round();  // one job running
    w.fail_exchange = true;
    w.requests.paused = true;  // no fetch wanted; only the beat would exchange
    w.now += 1s;
    EXPECT_EQ(w.round().kind, K::pause);
    w.fail_exchange = false;
    w.round();
    EXPECT_EQ(w.find(K::resync), nullptr);  // a job still runs: its entry must stay

    w.finished.push_back(job(JobStatus::succeeded));
    w.round();
    EXPECT_EQ(w.find(K::resync), nullptr);  // its acknowledgement is not sent yet
    w.fail_resync = true;
    w.round();
    EXPECT_NE(w.find(K::resync), nullptr);
    w.fail_resync = false;
    w.round();
    EXPECT_NE(w.find(K::resync), nullptr);
    w.round();
    EXPECT_EQ(w.find(K::resync), nullptr);  // done once it succeeded

    ++w.master_switches;  // a failover may have lost acknowledgements too
    w.round();
    EXPECT_NE(w.find(K::resync), nullptr);
}

TEST(WorkerDispatchFsm, UnstartedJobsBackOffDoublingToTheCapAndResetWhenJobsRun) {
    auto config = threads(1);
    config.fork_mode = true;
    config.heartbeat_interval = 1h;  // no beat due while backing off
    config.heartbeat_timeout = 2h;
    World w{config};
    w.queued = 100;
    std::vector<long long> delays;
    for (int i = 0; i < 9; ++i) {
        w.round();  // one taken, and (next round) it could not be started
        w.unstarted = 1;
        auto a = w.round();
        const auto* requeue = w.find(K::requeue_unstarted);
        ASSERT_NE(requeue, nullptr);
        EXPECT_EQ(requeue->count, 1u);
        delays.push_back(requeue->delay.count());
        EXPECT_EQ(w.asked(), 0u);  // backing off: nothing taken
        ASSERT_EQ(a.kind, K::wait);
        EXPECT_EQ(a.deadline, w.now + requeue->delay);
        w.now += requeue->delay;
    }
    EXPECT_EQ(delays, (std::vector<long long>{50, 100, 200, 400, 800, 1600, 3200, 5000, 5000}));
    EXPECT_EQ(w.fsm.in_flight(), 0u);

    w.round();  // the pause is over: one taken, and it runs
    EXPECT_EQ(w.asked(), 1u);
    w.finished.push_back(job(JobStatus::succeeded));
    w.round();
    EXPECT_EQ(w.fsm.backoff(), 0ms);
    w.unstarted = 1;
    w.round();
    EXPECT_EQ(w.find(K::requeue_unstarted)->delay, 50ms);
}

TEST(WorkerDispatchFsm, BurstStopsOnlyWhenQueuesAreEmptyAndNothingRuns) {
    auto config = threads(4);
    config.burst = true;
    World w{config};
    EXPECT_EQ(w.round().kind, K::stop);
    EXPECT_EQ(w.asked(), 4u);

    World busy{config};
    busy.queued = 2;
    auto a = busy.round();
    ASSERT_EQ(a.kind, K::wait);  // the queues are empty, two jobs run
    EXPECT_TRUE(a.arm_waiter);
    EXPECT_EQ(a.wake_after, 1u);  // queues empty: wake as a thread idles
    busy.finished.push_back(job(JobStatus::succeeded));
    EXPECT_EQ(busy.round().kind, K::wait);
    busy.finished.push_back(job(JobStatus::failed));
    EXPECT_EQ(busy.round().kind, K::stop);  // acknowledged in the last exchange, then done
    EXPECT_EQ(busy.count(K::exchange), 1u);
    EXPECT_EQ(busy.fsm.summary().succeeded, 1u);
    EXPECT_EQ(busy.fsm.summary().failed, 1u);

    World steady{threads(4)};  // not burst: waits for jobs instead
    a = steady.round();
    EXPECT_EQ(a.kind, K::wait);
    EXPECT_TRUE(a.arm_waiter);
    EXPECT_EQ(a.interval, 5s);
}

TEST(WorkerDispatchFsm, GracefulStopWaitsForRunningJobsAndRequeuesPrefetchedOnes) {
    auto config = threads(2);
    config.prefetch_window = 1s;
    World w{config};
    w.queued = 100;
    w.round();
    ASSERT_EQ(w.fsm.in_flight(), 6u);

    w.requests.stop_graceful = true;
    w.backlog = 4;  // taken but not started
    auto a = w.round();
    EXPECT_NE(w.find(K::take_backlog), nullptr);
    EXPECT_EQ(w.find(K::signal_jobs), nullptr);
    EXPECT_EQ(w.fsm.summary().requeued, 4u);
    EXPECT_EQ(w.fsm.in_flight(), 2u);
    EXPECT_EQ(w.asked(), 0u);  // the requeues go out, nothing is taken
    EXPECT_EQ(w.count(K::exchange), 1u);
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_EQ(a.wake_after, 1u);

    w.now += 2s;  // stopping: no dead-worker scans any more
    w.finished.push_back(job(JobStatus::succeeded));
    EXPECT_EQ(w.round().kind, K::wait);
    EXPECT_EQ(w.find(K::recover), nullptr);
    w.finished.push_back(job(JobStatus::succeeded));
    EXPECT_EQ(w.round().kind, K::stop);
    EXPECT_EQ(w.fsm.summary().succeeded, 2u);
    EXPECT_EQ(w.queued, 94u);
}

TEST(WorkerDispatchFsm, ImmediateStopTermsJobsOnceThenKillsAfterTheGrace) {
    auto config = threads(2);
    config.fork_mode = true;
    World w{config};
    w.queued = 10;
    w.round();
    w.requests.stop_now = true;
    auto a = w.round();
    ASSERT_EQ(w.count(K::signal_jobs), 1u);
    EXPECT_EQ(w.find(K::signal_jobs)->signal, SIGTERM);
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_LE(a.deadline, w.now + DispatchFsm::stop_grace);
    EXPECT_EQ(w.asked(), 0u);

    w.now += 1s;
    w.finished.push_back(job(JobStatus::failed, 0.5, SIGTERM));  // stopped by us: run again later
    w.round();
    EXPECT_EQ(w.find(K::signal_jobs), nullptr);
    EXPECT_EQ(w.finished.size(), 0u);
    EXPECT_EQ(w.fsm.summary().requeued, 1u);
    EXPECT_EQ(w.fsm.summary().failed, 0u);

    w.now = t0 + DispatchFsm::stop_grace;
    w.round();
    ASSERT_EQ(w.count(K::signal_jobs), 1u);
    EXPECT_EQ(w.find(K::signal_jobs)->signal, SIGKILL);
    w.finished.push_back(job(JobStatus::failed, 0.5, SIGKILL));
    EXPECT_EQ(w.round().kind, K::stop);
    EXPECT_EQ(w.find(K::signal_jobs), nullptr);
    EXPECT_EQ(w.fsm.summary().requeued, 2u);

    World idle{threads(1)};
    idle.requests.stop_now = true;
    EXPECT_EQ(idle.round().kind, K::stop);
    EXPECT_EQ(idle.find(K::exchange), nullptr);
}

TEST(WorkerDispatchFsm, StopGivesUpOnRedisAfterFourFailuresWithNothingRunning) {
    World w{threads(1)};
    w.requests.stop_graceful = true;
    w.fail_exchange = true;
    w.now += 1s;  // a beat is due: the exchange is tried
    for (int i = 0; i < 3; ++i) EXPECT_EQ(w.round().kind, K::pause);
    EXPECT_EQ(w.round().kind, K::stop);
}

TEST(WorkerDispatchFsm, PauseTakesNothingUntilContinue) {
    World w{threads(2)};
    w.queued = 5;
    w.requests.paused = true;
    auto a = w.round();
    EXPECT_EQ(w.find(K::exchange), nullptr);
    EXPECT_EQ(a.kind, K::wait);
    w.now += 1s;
    w.round();  // the beat still goes out
    ASSERT_NE(w.find(K::exchange), nullptr);
    EXPECT_TRUE(w.find(K::exchange)->beat);
    EXPECT_EQ(w.asked(), 0u);

    w.requests.paused = false;
    w.round();
    EXPECT_EQ(w.asked(), 2u);
    EXPECT_EQ(w.queued, 3u);
}

TEST(WorkerDispatchFsm, UsrOneTermsRunningJobsWithoutStopping) {
    auto config = threads(1);
    config.fork_mode = true;
    World w{config};
    w.queued = 1;
    w.round();
    w.requests.kill_children = true;
    EXPECT_EQ(w.round().kind, K::wait);
    ASSERT_EQ(w.count(K::signal_jobs), 1u);
    EXPECT_EQ(w.find(K::signal_jobs)->signal, SIGTERM);
    w.finished.push_back(job(JobStatus::failed, 0.1, SIGTERM));
    w.round();
    EXPECT_EQ(w.fsm.summary().failed, 1u);  // not a stop: a failure
    EXPECT_EQ(w.count(K::signal_jobs), 0u);
}

TEST(WorkerDispatchFsm, HeartbeatAndRecoveryAreDueAtTheirIntervalsIdleOrBusy) {
    World idle{threads(1)};
    auto a = idle.round();
    EXPECT_FALSE(idle.find(K::exchange)->beat);
    EXPECT_EQ(idle.find(K::recover), nullptr);
    EXPECT_EQ(a.deadline, t0 + 1s);  // the beat and the scan
    idle.now = t0 + 1s;
    idle.round();
    ASSERT_NE(idle.find(K::recover), nullptr);
    EXPECT_FALSE(idle.find(K::recover)->full_scan);
    EXPECT_TRUE(idle.find(K::exchange)->beat);
    EXPECT_TRUE(idle.find(K::exchange)->idle);
    idle.now = t0 + 1500ms;
    idle.round();
    EXPECT_EQ(idle.find(K::recover), nullptr);
    EXPECT_FALSE(idle.find(K::exchange)->beat);

    // Every processing list is scanned each 10 heartbeat timeouts; a failed
    // scan waits for the next beat all the same.
    idle.now = t0 + 50s;
    idle.fail_recover = true;
    idle.round();
    EXPECT_TRUE(idle.find(K::recover)->full_scan);
    idle.fail_recover = false;
    idle.now = t0 + 50500ms;
    idle.round();
    EXPECT_EQ(idle.find(K::recover), nullptr);
    idle.now = t0 + 51s;
    idle.round();
    EXPECT_TRUE(idle.find(K::recover)->full_scan);  // the failed one is tried again
    idle.now = t0 + 52s;
    idle.round();
    EXPECT_FALSE(idle.find(K::recover)->full_scan);

    World busy{threads(2)};
    busy.queued = 2;
    busy.round();
    busy.now = t0 + 1s;
    a = busy.round();
    ASSERT_NE(busy.find(K::exchange), nullptr);
    EXPECT_TRUE(busy.find(K::exchange)->beat);
    EXPECT_EQ(busy.find(K::exchange)->busy, 2u);
    EXPECT_FALSE(busy.find(K::exchange)->idle);
    EXPECT_EQ(busy.asked(), 0u);
    EXPECT_NE(busy.find(K::recover), nullptr);
    EXPECT_EQ(a.deadline, t0 + 2s);
}

TEST(WorkerDispatchFsm, MaxJobsTakesNoMoreAndStopsOnceTheyFinish) {
    auto config = threads(4);
    config.max_jobs = 3;
    World w{config};
    w.queued = 10;
    w.round();
    EXPECT_EQ(w.asked(), 3u);
    auto a = w.round();
    EXPECT_EQ(a.kind, K::wait);
    EXPECT_EQ(a.wake_after, 1u);  // nothing more to take: acknowledge each
    for (int i = 0; i < 3; ++i) w.finished.push_back(job(JobStatus::succeeded));
    EXPECT_EQ(w.round().kind, K::stop);
    EXPECT_EQ(w.asked(), 0u);
    EXPECT_EQ(w.fsm.summary().total(), 3u);
}

TEST(WorkerDispatchFsm, HeldBackOperationsAreSentAgainEvery200Ms) {
    World w{threads(1)};
    w.queued = 1;
    w.round();
    w.keep = true;
    w.finished.push_back(job(JobStatus::succeeded));
    auto a = w.round();
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_EQ(a.deadline, w.now + DispatchFsm::kept_retry);
    w.now += 100ms;
    w.round();
    EXPECT_FALSE(w.find(K::exchange)->resend);
    w.now = t0 + DispatchFsm::kept_retry;
    w.keep = false;
    w.round();
    ASSERT_NE(w.find(K::exchange), nullptr);
    EXPECT_TRUE(w.find(K::exchange)->resend);
    w.round();
    EXPECT_FALSE(w.find(K::exchange)->resend);
}

TEST(WorkerDispatchFsm, WakesForFinishedJobsOnlyWhenTheyFreeRoomWorthFilling) {
    auto config = threads(4);
    config.prefetch_window = 1s;
    World w{config};
    w.queued = 8;  // 4 + 4 prefetched
    w.round();
    ASSERT_EQ(w.fsm.in_flight(), 8u);
    auto a = w.round();
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_FALSE(a.arm_waiter);
    EXPECT_EQ(a.wake_after, 2u);  // 6 left <= 4 + 4/2
    EXPECT_FALSE(w.fsm.enough(1));
    EXPECT_TRUE(w.fsm.enough(2));

    w.finished.push_back(job(JobStatus::succeeded, 0.25));
    w.finished.push_back(job(JobStatus::succeeded, 0.25));
    a = w.round();  // the queues come up empty now
    ASSERT_EQ(a.kind, K::wait);
    EXPECT_TRUE(a.arm_waiter);
    EXPECT_EQ(a.wake_after, 3u);  // queues empty: when a thread idles (6 - 3 < 4)
}

}  // namespace

TEST(WorkerDispatchFsm, PeriodicJobsArePromotedBeforeTakingAndAtTheirNextRun) {
    World w{{.concurrency = 2, .heartbeat_interval = 5s, .heartbeat_timeout = 30s, .periodic_poll = 1s}};
    w.queued = 1;
    w.round();
    // First round: promoted before the exchange, so a job it enqueued is taken at once.
    ASSERT_NE(w.find(K::promote_periodic), nullptr);
    ASSERT_NE(w.find(K::exchange), nullptr);
    EXPECT_LT(w.find(K::promote_periodic), w.find(K::exchange));
    // Nothing to do now: the wait ends when the next run is due (300 ms).
    w.now += 10ms;
    DispatchAction wait = w.round();
    EXPECT_EQ(w.find(K::promote_periodic), nullptr);
    ASSERT_EQ(wait.kind, K::wait);
    EXPECT_EQ(wait.deadline, t0 + 300ms);
    // A next run far away: looked at again after periodic_poll anyway (new definitions).
    w.next_periodic_in = 1h;
    w.now = t0 + 300ms;
    w.round();
    EXPECT_NE(w.find(K::promote_periodic), nullptr);
    w.now += 10ms;
    wait = w.round();
    EXPECT_EQ(w.find(K::promote_periodic), nullptr);
    EXPECT_EQ(wait.deadline, t0 + 1300ms);
    // Paused or stopping: no promotion.
    w.now += 2s;
    w.requests.paused = true;
    w.round();
    EXPECT_EQ(w.find(K::promote_periodic), nullptr);
    w.requests.paused = false;
    w.requests.stop_graceful = true;
    w.round();
    EXPECT_EQ(w.find(K::promote_periodic), nullptr);
}

TEST(WorkerDispatchFsm, NoPeriodicPollNeverPromotes) {
    World w{{.concurrency = 1}};
    for (int i = 0; i < 5; ++i, w.now += 2s) w.round();
    EXPECT_EQ(w.find(K::promote_periodic), nullptr);
}
