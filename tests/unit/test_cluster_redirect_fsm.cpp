// The cluster router's redirection decisions, without a server: MOVED and ASK
// followed to the node they name, a hop seen again paused with a capped
// backoff, TRYAGAIN and lost connections resent later, the slot map read at
// most every kMinMapRefreshGap, and a redirection that outlasts the call's
// deadline turned into a message naming the slot.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "client/cluster_redirect_fsm.hpp"

using namespace std::chrono_literals;
using retools::Endpoint;
using retools::detail::parse_redirection;
using retools::detail::RedirectFsm;
using retools::detail::RedirectKind;
using retools::detail::RedirectStep;
using Action = RedirectStep::Action;
using Clock = RedirectFsm::Clock;

namespace {

const Endpoint node_a{"127.0.0.1", 7000}, node_b{"127.0.0.1", 7001}, node_c{"127.0.0.1", 7002};
const Clock::time_point t0{};  // any fixed instant: the machine is given its times

RedirectFsm fsm_until(std::chrono::milliseconds budget) {
    return RedirectFsm(2274, t0, t0 + budget);
}

}  // namespace

TEST(ClusterRedirectFsm, ParsesMovedAndAskAndRefusesMalformedOnes) {
    auto m = parse_redirection("MOVED 2274 127.0.0.1:7001", node_a);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->slot, 2274);
    EXPECT_EQ(m->to, node_b);
    auto ipv6 = parse_redirection("ASK 1 [::1]:7002", node_a);
    ASSERT_TRUE(ipv6);
    EXPECT_EQ(ipv6->to, (Endpoint{"::1", 7002}));
    auto no_host = parse_redirection("MOVED 5 :7002", Endpoint{"10.0.0.9", 7000});
    ASSERT_TRUE(no_host);
    EXPECT_EQ(no_host->to, (Endpoint{"10.0.0.9", 7002}));  // the answering node's host
    for (const char* bad : {"MOVED", "MOVED 2274", "MOVED 16384 127.0.0.1:7001", "MOVED x 127.0.0.1:7001",
                            "MOVED 12x 127.0.0.1:7001", "MOVED 1 127.0.0.1", "MOVED 1 127.0.0.1:0",
                            "MOVED 1 127.0.0.1:70000", "MOVED 1 127.0.0.1:7001x"})
        EXPECT_FALSE(parse_redirection(bad, node_a)) << bad;
}

TEST(ClusterRedirectFsm, AnAnswerThatIsNoRedirectionIsDelivered) {
    RedirectFsm fsm = fsm_until(5s);
    EXPECT_EQ(fsm.on_reply(RedirectKind::none, "", node_a, t0).action, Action::deliver);
    EXPECT_EQ(fsm.attempts(), 1);
}

TEST(ClusterRedirectFsm, MovedGoesStraightToTheNodeNamedAndCorrectsTheMap) {
    RedirectFsm fsm = fsm_until(5s);
    RedirectStep s = fsm.on_reply(RedirectKind::moved, "MOVED 2274 127.0.0.1:7001", node_a, t0);
    EXPECT_EQ(s.action, Action::resend);
    ASSERT_TRUE(s.to);
    EXPECT_EQ(*s.to, node_b);
    EXPECT_FALSE(s.asking);
    EXPECT_EQ(s.pause, 0ms);  // a first hop is progress: no wait
    EXPECT_TRUE(s.correct_map);
    EXPECT_EQ(s.slot, 2274);
    EXPECT_TRUE(s.refresh_map);
}

TEST(ClusterRedirectFsm, AskSendsAskingToTheNodeNamedAndLeavesTheMap) {
    RedirectFsm fsm = fsm_until(5s);
    RedirectStep s = fsm.on_reply(RedirectKind::ask, "ASK 2274 127.0.0.1:7001", node_a, t0);
    EXPECT_EQ(s.action, Action::resend);
    ASSERT_TRUE(s.to);
    EXPECT_EQ(*s.to, node_b);
    EXPECT_TRUE(s.asking);
    EXPECT_FALSE(s.correct_map);
    EXPECT_FALSE(s.refresh_map);
    EXPECT_EQ(s.pause, 0ms);
}

TEST(ClusterRedirectFsm, APingPongBacksOffExponentiallyUpTo50msAndKeepsFollowing) {
    RedirectFsm fsm = fsm_until(60s);
    // The importing node sends back to the migrating one and the reverse.
    EXPECT_EQ(fsm.on_reply(RedirectKind::moved, "MOVED 2274 127.0.0.1:7001", node_a, t0).pause, 0ms);
    EXPECT_EQ(fsm.on_reply(RedirectKind::moved, "MOVED 2274 127.0.0.1:7000", node_b, t0).pause, 0ms);
    std::chrono::milliseconds expected[] = {1ms, 2ms, 4ms, 8ms, 16ms, 32ms, 50ms, 50ms, 50ms};
    for (std::size_t i = 0; i < std::size(expected); ++i) {
        const bool from_a = i % 2 == 0;
        RedirectStep s = fsm.on_reply(RedirectKind::moved,
                                      from_a ? "MOVED 2274 127.0.0.1:7001" : "MOVED 2274 127.0.0.1:7000",
                                      from_a ? node_a : node_b, t0 + std::chrono::milliseconds(i));
        EXPECT_EQ(s.action, Action::resend) << i;
        EXPECT_EQ(s.pause, expected[i]) << i;
        ASSERT_TRUE(s.to);
        EXPECT_EQ(*s.to, from_a ? node_b : node_a) << i;
    }
    EXPECT_EQ(fsm.stalls(), static_cast<int>(std::size(expected)));
    EXPECT_EQ(fsm.attempts(), 2 + static_cast<int>(std::size(expected)));
}

TEST(ClusterRedirectFsm, ANodeSendingToItselfIsNoProgress) {
    RedirectFsm fsm = fsm_until(5s);
    EXPECT_EQ(fsm.on_reply(RedirectKind::moved, "MOVED 2274 127.0.0.1:7000", node_a, t0).pause, 1ms);
    EXPECT_EQ(fsm.stalls(), 1);
}

TEST(ClusterRedirectFsm, NewHopsDuringAMigrationArePausedOnlyWhenRepeated) {
    RedirectFsm fsm = fsm_until(5s);
    // ASK a→b, b says TRYAGAIN (keys still split), the map sends to a, a says ASK b again.
    EXPECT_EQ(fsm.on_reply(RedirectKind::ask, "ASK 2274 127.0.0.1:7001", node_a, t0).pause, 0ms);
    RedirectStep retry =
        fsm.on_reply(RedirectKind::retry, "TRYAGAIN Multiple keys request during rehashing", node_b, t0);
    EXPECT_EQ(retry.action, Action::resend);
    EXPECT_FALSE(retry.to);  // where the map says
    EXPECT_EQ(retry.pause, 5ms);
    EXPECT_TRUE(retry.refresh_map);
    EXPECT_EQ(fsm.on_reply(RedirectKind::ask, "ASK 2274 127.0.0.1:7001", node_a, t0).pause, 1ms);
    // Once the slot has moved, a MOVED a→c is a new hop.
    EXPECT_EQ(fsm.on_reply(RedirectKind::moved, "MOVED 2274 127.0.0.1:7002", node_a, t0).pause, 0ms);
}

TEST(ClusterRedirectFsm, RetriesAndLostConnectionsBackOffFrom5To100ms) {
    RedirectFsm fsm = fsm_until(60s);
    std::chrono::milliseconds expected[] = {5ms, 10ms, 20ms, 40ms, 80ms, 100ms, 100ms};
    for (std::size_t i = 0; i < std::size(expected); ++i) {
        RedirectStep s = i % 2 ? fsm.on_connection_error(true, t0)
                               : fsm.on_reply(RedirectKind::retry, "CLUSTERDOWN The cluster is down", node_a, t0);
        EXPECT_EQ(s.action, Action::resend) << i;
        EXPECT_EQ(s.pause, expected[i]) << i;
        EXPECT_TRUE(s.refresh_map) << i;
        EXPECT_FALSE(s.to) << i;
    }
}

TEST(ClusterRedirectFsm, AConnectionFailureAfterAWriteLeftIsNotResent) {
    RedirectFsm fsm = fsm_until(5s);
    EXPECT_EQ(fsm.on_connection_error(false, t0).action, Action::give_up);
    RedirectFsm late = fsm_until(5s);
    EXPECT_EQ(late.on_connection_error(true, t0 + 5s).action, Action::give_up);
}

TEST(ClusterRedirectFsm, ARedirectionIsFollowedUntilTheDeadlineAndThenNamesTheSlot) {
    RedirectFsm fsm = fsm_until(2s);
    int sent = 0;
    Clock::time_point now = t0;
    RedirectStep s;
    // A node that has not learnt of the move and the new owner disagree for good.
    for (;; ++sent) {
        const bool from_a = sent % 2 == 0;
        s = fsm.on_reply(RedirectKind::moved,
                         from_a ? "MOVED 2274 127.0.0.1:7001" : "MOVED 2274 127.0.0.1:7000", from_a ? node_a : node_b,
                         now);
        if (s.action != Action::resend) break;
        now += s.pause + 1ms;  // each send takes a millisecond
        ASSERT_LT(sent, 10000);
    }
    EXPECT_EQ(s.action, Action::give_up);
    EXPECT_GE(now, t0 + 2s);
    EXPECT_GT(sent, 30);  // far more than a fixed count of attempts
    const std::string message = fsm.give_up_message("cluster via 127.0.0.1:7000", now);
    EXPECT_NE(message.find("slot 2274"), std::string::npos) << message;
    EXPECT_NE(message.find("kept redirecting"), std::string::npos) << message;
    EXPECT_NE(message.find("did not run"), std::string::npos) << message;
    EXPECT_NE(message.find("MOVED 2274 127.0.0.1:700"), std::string::npos) << message;
}

TEST(ClusterRedirectFsm, APauseNeverRunsPastTheDeadline) {
    RedirectFsm fsm = fsm_until(3ms);
    for (int i = 0; i < 6; ++i) fsm.on_reply(RedirectKind::retry, "TRYAGAIN", node_a, t0);
    RedirectStep s = fsm.on_reply(RedirectKind::retry, "TRYAGAIN", node_a, t0 + 2ms);
    EXPECT_EQ(s.action, Action::resend);
    EXPECT_EQ(s.pause, 1ms);  // 100 ms due, 1 ms left
}

TEST(ClusterRedirectFsm, AMalformedRedirectionGivesUpAtOnce) {
    RedirectFsm fsm = fsm_until(5s);
    EXPECT_EQ(fsm.on_reply(RedirectKind::moved, "MOVED nonsense", node_a, t0).action, Action::give_up);
}

TEST(ClusterRedirectFsm, TheMapIsReadAtMostEveryGapWhateverTheErrors) {
    using retools::detail::kMinMapRefreshGap;
    using retools::detail::map_refresh_due;
    EXPECT_TRUE(map_refresh_due(true, kMinMapRefreshGap, 0s, 0s));
    EXPECT_FALSE(map_refresh_due(true, kMinMapRefreshGap - 1ms, 0s, 0s));  // a storm: one read per gap
    EXPECT_FALSE(map_refresh_due(false, 1h, 1h, 0s));                      // no interval: only when stale
    EXPECT_TRUE(map_refresh_due(false, 1h, 61s, 60s));                     // the periodic read
    EXPECT_FALSE(map_refresh_due(false, 1h, 59s, 60s));
}
