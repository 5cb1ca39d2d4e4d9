// The near cache's fill rules (cache/near_cache.hpp), without a server: the
// interleavings of reads, invalidations and clears that the integration tests
// can only hit by chance.
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "cache/near_cache.hpp"

namespace {

using retools::LocalCacheOptions;
using retools::detail::NearCache;
using retools::detail::NearRead;

const std::string key = "retools:r:ns:k";

std::string held(NearCache& c) {
    auto v = c.find(key);
    return v ? *v->value : std::string("<none>");
}

TEST(NearCacheFill, AReadKeepsWhatItFound) {
    NearCache c("r", {});
    c.set_active(true);
    {
        NearRead r(c, key);
        r.fill("v1", 1.0, 0);
    }
    EXPECT_EQ(held(c), "v1");
    EXPECT_EQ(c.size(), 1u);
}

TEST(NearCacheFill, NothingIsKeptOrServedWhileTrackingIsDown) {
    NearCache c("r", {});
    {
        NearRead r(c, key);
        r.fill("v1", 1.0, 0);
    }
    EXPECT_EQ(c.size(), 0u);
    c.set_active(true);
    EXPECT_EQ(held(c), "<none>");
}

TEST(NearCacheFill, AnInvalidationDuringTheReadDropsTheFill) {
    NearCache c("r", {});
    c.set_active(true);
    {
        NearRead r(c, key);
        c.invalidate(key);  // the write's message arrived before the reply was used
        r.fill("v1", 1.0, 0);
    }
    EXPECT_EQ(held(c), "<none>");
    // The next read is not affected.
    {
        NearRead r(c, key);
        r.fill("v2", 2.0, 0);
    }
    EXPECT_EQ(held(c), "v2");
}

TEST(NearCacheFill, AClearDuringTheReadDropsTheFill) {
    NearCache c("r", {});
    c.set_active(true);
    {
        NearRead r(c, key);
        c.clear();
        r.fill("v1", 1.0, 0);
    }
    EXPECT_EQ(held(c), "<none>");
}

TEST(NearCacheFill, ASlowReaderCannotPutBackAnOlderValue) {
    NearCache c("r", {});
    c.set_active(true);
    // The slow read began first and saw v1; the fast one began later, saw v2
    // (written in between) and ended first. The write's invalidation is late.
    auto slow = std::make_unique<NearRead>(c, key);
    {
        NearRead fast(c, key);
        fast.fill("v2", 2.0, 0);
    }
    EXPECT_EQ(held(c), "v2");
    slow->fill("v1", 1.0, 0);
    slow.reset();
    EXPECT_EQ(held(c), "v2");
}

TEST(NearCacheFill, AnOlderValueIsRefusedEvenAfterTheNewerCopyWasEvicted) {
    NearCache c("r", {.max_entries = 1});
    c.set_active(true);
    auto slow = std::make_unique<NearRead>(c, key);
    {
        NearRead fast(c, key);
        fast.fill("v2", 2.0, 0);
    }
    {
        const std::string other_key = "retools:r:ns:other";
        NearRead other(c, other_key);  // evicts the newer copy of `key`
        other.fill("x", 5.0, 0);
    }
    EXPECT_EQ(held(c), "<none>");
    slow->fill("v1", 1.0, 0);
    slow.reset();
    EXPECT_EQ(held(c), "<none>");
}

TEST(NearCacheFill, ANewerValueReplacesTheLocalCopy) {
    NearCache c("r", {});
    c.set_active(true);
    auto first = std::make_unique<NearRead>(c, key);
    {
        NearRead second(c, key);
        second.fill("v1", 1.0, 0);
    }
    first->fill("v2", 2.0, 0);  // began first but its reply is newer
    first.reset();
    EXPECT_EQ(held(c), "v2");
}

TEST(NearCacheFill, BoundsEvictTheLeastRecentlyUsed) {
    NearCache c("r", {.max_entries = 2});
    c.set_active(true);
    const std::string a = "retools:r:ns:a", b = "retools:r:ns:b", d = "retools:r:ns:d";
    for (const std::string* k : {&a, &b}) {
        NearRead r(c, *k);  // NearRead keeps a reference to the key
        r.fill(*k, 1.0, 0);
    }
    ASSERT_TRUE(c.find(a));  // a is now the most recently used
    {
        NearRead r(c, d);
        r.fill("d", 1.0, 0);
    }
    EXPECT_TRUE(c.find(a));
    EXPECT_FALSE(c.find(b));
    EXPECT_TRUE(c.find(d));
}

}  // namespace
