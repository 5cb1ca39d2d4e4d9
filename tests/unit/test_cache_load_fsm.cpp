// The cache-load protocol of one key (src/cache/load_fsm.hpp), without Redis.
#include <gtest/gtest.h>

#include "cache/load_fsm.hpp"

namespace {

using retools::detail::KeyLoad;
using retools::detail::LoadStep;
using retools::detail::Regenerate;
using retools::detail::StoredValue;

constexpr double expires = 60;  // seconds
constexpr double fixed_now = 1000000;

StoredValue stored(double age, double delta = 0) {
    return StoredValue{.present = true, .has_value = true, .created = fixed_now - age, .delta = delta, .value = "v"};
}

const StoredValue missing{};

TEST(CacheLoadFsm, AFreshValueThatDecodesIsServed) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    EXPECT_EQ(k.read(stored(10), true, fixed_now, 0.5), LoadStep::serve);
    EXPECT_FALSE(k.refresh_early());
}

TEST(CacheLoadFsm, AFreshValueThatDoesNotDecodeIsAMiss) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    EXPECT_EQ(k.read(stored(10), false, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_FALSE(k.have_stale());
    // Busy lock and nothing to serve: wait for the other caller's value.
    EXPECT_EQ(k.locked(false, missing, false, fixed_now), LoadStep::wait);
}

TEST(CacheLoadFsm, NothingStoredAndNoRegenerationIsNone) {
    KeyLoad k{Regenerate::never, expires, 0};
    EXPECT_EQ(k.read(missing, false, fixed_now, 0.5), LoadStep::none);
    // Without regeneration, any age is served.
    KeyLoad old{Regenerate::never, expires, 0};
    EXPECT_EQ(old.read(stored(1e6), true, fixed_now, 0.5), LoadStep::serve);
}

TEST(CacheLoadFsm, WhenMissingServesAnyAgeAndGeneratesOnlyWhenNothingIsStored) {
    KeyLoad old{Regenerate::when_missing, expires, 0};
    EXPECT_EQ(old.read(stored(1e6), true, fixed_now, 0.5), LoadStep::serve);
    KeyLoad none{Regenerate::when_missing, expires, 0};
    EXPECT_EQ(none.read(missing, false, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_EQ(none.locked(true, missing, false, fixed_now), LoadStep::produce);
}

TEST(CacheLoadFsm, AStaleValueIsServedWhileSomeoneElseRegenerates) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    EXPECT_EQ(k.read(stored(61), true, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_TRUE(k.have_stale());
    EXPECT_EQ(k.locked(false, missing, false, fixed_now), LoadStep::serve);
}

TEST(CacheLoadFsm, WithTheLockAStaleValueIsRegeneratedUnlessSomeoneStoredAFreshOne) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    ASSERT_EQ(k.read(stored(61), true, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_EQ(k.locked(true, stored(61), true, fixed_now), LoadStep::produce);  // still the stale one
    KeyLoad k2{Regenerate::when_stale, expires, 0};
    ASSERT_EQ(k2.read(stored(61), true, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_EQ(k2.locked(true, stored(0.01), true, fixed_now), LoadStep::serve);  // stored meanwhile
}

TEST(CacheLoadFsm, WithTheLockAndNothingBeforeAnyValueStoredMeanwhileIsServed) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    ASSERT_EQ(k.read(missing, false, fixed_now, 0.5), LoadStep::try_lock);
    // Older than `expires` already (a slow function): still the one we lacked.
    EXPECT_EQ(k.locked(true, stored(100), true, fixed_now), LoadStep::serve);
    KeyLoad k2{Regenerate::when_stale, expires, 0};
    ASSERT_EQ(k2.read(missing, false, fixed_now, 0.5), LoadStep::try_lock);
    EXPECT_EQ(k2.locked(true, missing, false, fixed_now), LoadStep::produce);
}

TEST(CacheLoadFsm, AWaitEndsInTheOtherCallersValueItsOwnComputationOrATimeout) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    ASSERT_EQ(k.read(missing, false, fixed_now, 0.5), LoadStep::try_lock);
    ASSERT_EQ(k.locked(false, missing, false, fixed_now), LoadStep::wait);
    EXPECT_EQ(k.waited(true, true), LoadStep::serve);
    EXPECT_EQ(k.waited(true, false), LoadStep::produce);  // the other caller stored nothing
    EXPECT_EQ(k.waited(false, false), LoadStep::timeout);
}

TEST(CacheLoadFsm, EarlyRefreshFollowsXFetch) {
    // created 50 s ago, expires 60 s, delta 2 s, beta 1: refresh when -2 ln(u) >= 10, u <= e^-5.
    KeyLoad never{Regenerate::when_stale, expires, 1.0};
    EXPECT_EQ(never.read(stored(50, 2), true, fixed_now, 0.5), LoadStep::serve);
    EXPECT_FALSE(never.refresh_early());
    KeyLoad due{Regenerate::when_stale, expires, 1.0};
    EXPECT_EQ(due.read(stored(50, 2), true, fixed_now, 0.006), LoadStep::serve);
    EXPECT_TRUE(due.refresh_early());
    // Off without beta, without a known delta, and when not regenerating.
    KeyLoad off{Regenerate::when_stale, expires, 0};
    off.read(stored(59.9, 2), true, fixed_now, 1e-9);
    EXPECT_FALSE(off.refresh_early());
    KeyLoad no_delta{Regenerate::when_stale, expires, 1.0};
    no_delta.read(stored(59.9, 0), true, fixed_now, 1e-9);
    EXPECT_FALSE(no_delta.refresh_early());
    KeyLoad never_mode{Regenerate::never, expires, 1.0};
    never_mode.read(stored(59.9, 2), true, fixed_now, 1e-9);
    EXPECT_FALSE(never_mode.refresh_early());
}

TEST(CacheLoadFsm, FreshnessIsStrictlyYoungerThanExpires) {
    KeyLoad k{Regenerate::when_stale, expires, 0};
    EXPECT_TRUE(k.fresh(stored(59.999), fixed_now));
    EXPECT_FALSE(k.fresh(stored(60), fixed_now));
    EXPECT_FALSE(k.fresh(missing, fixed_now));
}

}  // namespace

namespace {

using retools::detail::after_soft_wait;
using retools::detail::soft_timeout_applies;
using retools::detail::SoftStep;

TEST(CacheLoadFsm, ASoftTimeoutAppliesOnlyWithAStaleValueToFallBackOn) {
    EXPECT_TRUE(soft_timeout_applies(0.1, Regenerate::when_stale, true));
    EXPECT_FALSE(soft_timeout_applies(0.1, Regenerate::when_stale, false));  // nothing stored: wait
    EXPECT_FALSE(soft_timeout_applies(0, Regenerate::when_stale, true));     // off
    EXPECT_FALSE(soft_timeout_applies(0.1, Regenerate::when_missing, true));
    EXPECT_FALSE(soft_timeout_applies(0.1, Regenerate::never, true));
}

TEST(CacheLoadFsm, AfterASoftWaitTheNewValueTheStaleOneOrTheException) {
    // Still running: the stale value, whatever else is said.
    EXPECT_EQ(after_soft_wait(false, false, false, false), SoftStep::serve_stale);
    EXPECT_EQ(after_soft_wait(false, true, true, true), SoftStep::serve_stale);
    // Ended in time with a stored value that decodes: that value.
    EXPECT_EQ(after_soft_wait(true, false, false, true), SoftStep::serve_new);
    // A value that could not be stored or decoded: the stale one.
    EXPECT_EQ(after_soft_wait(true, false, false, false), SoftStep::serve_stale);
    // Threw in time: the exception, unless fail-safe serves the stale value.
    EXPECT_EQ(after_soft_wait(true, true, false, false), SoftStep::rethrow);
    EXPECT_EQ(after_soft_wait(true, true, true, false), SoftStep::serve_stale);
}

}  // namespace
