// The fail-fast decisions, without a server: a healthy server lets every
// call through; a failure takes it down for a backoff that starts at 100 ms
// and doubles up to the maximum; then exactly one call probes; any answer
// brings it back; failures of calls sent before it went down change nothing;
// a probe that never reports stops holding the others back.
#include <chrono>

#include <gtest/gtest.h>

#include "client/health_fsm.hpp"

using namespace std::chrono_literals;
using retools::detail::HealthFsm;
using Kind = HealthFsm::Admission::Kind;

namespace {

const HealthFsm::Clock::time_point start{};

HealthFsm health_machine() {
    return HealthFsm(2000ms, 10s);
}

}  // namespace

TEST(HealthFsm, AHealthyServerLetsEveryCallThrough) {
    HealthFsm fsm = health_machine();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(fsm.admit(start + i * 1ms).kind, Kind::send);
    EXPECT_FALSE(fsm.down());
}

TEST(HealthFsm, AFailureFailsCallsFastUntilTheBackoffThenAdmitsOneProbe) {
    HealthFsm fsm = health_machine();
    fsm.on_failure(start, "Redis x timed out", false);
    ASSERT_TRUE(fsm.down());
    EXPECT_EQ(fsm.failure(), "Redis x timed out");
    auto early = fsm.admit(start + 30ms);
    EXPECT_EQ(early.kind, Kind::fail_fast);
    EXPECT_EQ(early.retry_in, 70ms);
    EXPECT_EQ(fsm.admit(start + 100ms).kind, Kind::probe);
    auto during = fsm.admit(start + 101ms);
    EXPECT_EQ(during.kind, Kind::fail_fast);
    EXPECT_EQ(during.retry_in, 0ms);  // a probe is under way
}

TEST(HealthFsm, EachFailedProbeDoublesTheBackoffUpToTheMaximum) {
    HealthFsm fsm = health_machine();
    auto now = start;
    fsm.on_failure(now, "refused", false);
    std::vector<long long> backoffs{fsm.backoff().count()};
    for (int i = 0; i < 6; ++i) {
        now += fsm.backoff();
        ASSERT_EQ(fsm.admit(now).kind, Kind::probe);
        fsm.on_failure(now, "refused again", true);
        backoffs.push_back(fsm.backoff().count());
    }
    EXPECT_EQ(backoffs, (std::vector<long long>{100, 200, 400, 800, 1600, 2000, 2000}));
    EXPECT_EQ(fsm.failure(), "refused again");
}

TEST(HealthFsm, FailuresOfCallsSentBeforeTheServerWentDownChangeNothing) {
    HealthFsm fsm = health_machine();
    fsm.on_failure(start, "first", false);
    for (int i = 1; i <= 15; ++i) fsm.on_failure(start + i * 1ms, "in flight", false);
    EXPECT_EQ(fsm.backoff(), 100ms);
    EXPECT_EQ(fsm.failure(), "first");
    EXPECT_EQ(fsm.admit(start + 100ms).kind, Kind::probe);
}

TEST(HealthFsm, AnyAnswerBringsTheServerBackAndResetsTheBackoff) {
    HealthFsm fsm = health_machine();
    fsm.on_failure(start, "refused", false);
    ASSERT_EQ(fsm.admit(start + 100ms).kind, Kind::probe);
    fsm.on_failure(start + 100ms, "refused", true);
    ASSERT_EQ(fsm.backoff(), 200ms);
    fsm.on_success();
    EXPECT_FALSE(fsm.down());
    EXPECT_TRUE(fsm.failure().empty());
    EXPECT_EQ(fsm.admit(start + 101ms).kind, Kind::send);
    fsm.on_failure(start + 200ms, "again", false);
    EXPECT_EQ(fsm.backoff(), 100ms);  // starts over
}

TEST(HealthFsm, AnAbandonedProbeLetsTheNextCallProbe) {
    HealthFsm fsm = health_machine();
    fsm.on_failure(start, "refused", false);
    ASSERT_EQ(fsm.admit(start + 100ms).kind, Kind::probe);
    fsm.on_probe_abandoned();
    EXPECT_EQ(fsm.admit(start + 101ms).kind, Kind::probe);
}

TEST(HealthFsm, AProbeThatNeverReportsStopsHoldingTheOthersBackAfterItsLimit) {
    HealthFsm fsm(2000ms, 1s);
    fsm.on_failure(start, "timed out", false);
    ASSERT_EQ(fsm.admit(start + 100ms).kind, Kind::probe);
    EXPECT_EQ(fsm.admit(start + 1099ms).kind, Kind::fail_fast);
    EXPECT_EQ(fsm.admit(start + 1100ms).kind, Kind::probe);
}

TEST(HealthFsm, ABackoffMaximumOfZeroTurnsFailingFastOff) {
    HealthFsm fsm(0ms, 1s);
    fsm.on_failure(start, "refused", false);
    EXPECT_FALSE(fsm.down());
    EXPECT_EQ(fsm.admit(start).kind, Kind::send);
}

TEST(HealthFsm, AMaximumBelowTheFirstBackoffCapsItToo) {
    HealthFsm fsm(50ms, 1s);
    fsm.on_failure(start, "refused", false);
    EXPECT_EQ(fsm.backoff(), 50ms);
}
