// Hostile payloads: nesting checked without recursion before parsing, byte-exact
// failed entries (base64 beside a readable copy), base64 and UTF-8 helpers.
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/job.hpp>
#include <retools/queue.hpp>

#include "../support/expect.hpp"
#include "python/utf8.hpp"
#include "queue/json_limits.hpp"

namespace rd = retools::detail;
using retools::FailedJob;
using retools::Job;

namespace {

std::string deep_payload(std::size_t depth) {
    std::string s = R"({"job_id": "deep", "job": "tests.jobs:x", "kwargs": {"a": )";
    s.append(depth, '[');
    s.append(depth, ']');
    s.append(R"(}, "events": {}, "state": {}})");
    return s;
}

}  // namespace

TEST(PayloadLimits, DepthIsCountedOutsideStringsOnly) {
    EXPECT_EQ(rd::json_depth("{}"), 1u);
    EXPECT_EQ(rd::json_depth(R"({"a": [[1], {"b": []}]})"), 4u);
    EXPECT_EQ(rd::json_depth(R"({"a": "[[[[[[\"[[[["})"), 1u);
    EXPECT_EQ(rd::json_depth(R"(["\\", [[]]])"), 3u);  // an escaped backslash ends nothing
    EXPECT_EQ(rd::json_depth("42"), 0u);
    EXPECT_EQ(rd::json_depth(std::string(100000, '['), 512), 513u);  // stops early
}

TEST(PayloadLimits, AJobAt512LevelsParsesOneDeeperIsRefusedByName) {
    // The payload object and kwargs add two levels to the brackets.
    EXPECT_NO_THROW(Job::from_payload(deep_payload(rd::max_json_depth - 2), "main"));
    EXPECT_THROW_MSG(Job::from_payload(deep_payload(rd::max_json_depth - 1), "main"), retools::QueueError,
                     "job payload nests deeper than 512 levels");
}

TEST(PayloadLimits, A200000DeepPayloadIsRefusedWithoutCrashing) {
    EXPECT_THROW_MSG(Job::from_payload(deep_payload(200000), "main"), retools::QueueError, "nests deeper");
    std::string objects = R"({"job_id": "d", "job": "x:y", "kwargs": )";
    for (int i = 0; i < 200000; ++i) objects += R"({"k": )";
    EXPECT_THROW_MSG(Job::from_payload(objects, "main"), retools::QueueError, "nests deeper");
}

TEST(PayloadLimits, FailedEntryThatNestsTooDeepIsAQueueError) {
    std::string entry =
        R"({"payload": "x", "queue": "main", "error": "e", "worker": "w", "failed_at": 1.0, "x": )";
    entry.append(100000, '[');
    EXPECT_THROW_MSG(FailedJob::from_json(entry), retools::QueueError, "failed-job entry nests deeper");
}

TEST(PayloadLimits, Utf8Validation) {
    EXPECT_TRUE(rd::valid_utf8("plain ascii"));
    EXPECT_TRUE(rd::valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
    EXPECT_FALSE(rd::valid_utf8("\xff"));
    EXPECT_FALSE(rd::valid_utf8("\xc0\xaf"));          // overlong '/'
    EXPECT_FALSE(rd::valid_utf8("\xed\xa0\x80"));      // a surrogate
    EXPECT_FALSE(rd::valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
    EXPECT_FALSE(rd::valid_utf8("\xe2\x82"));          // truncated
}

TEST(PayloadLimits, Base64RoundTripsEveryByte) {
    std::string all;
    for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
    for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 256u}) {
        std::string bytes = all.substr(0, n);
        auto decoded = rd::base64_decode(rd::base64_encode(bytes));
        ASSERT_TRUE(decoded.has_value()) << n;
        EXPECT_EQ(*decoded, bytes) << n;
    }
    EXPECT_EQ(rd::base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(rd::base64_encode("fo"), "Zm8=");
    EXPECT_FALSE(rd::base64_decode("Zm9").has_value());
    EXPECT_FALSE(rd::base64_decode("Zm!=").has_value());
    EXPECT_FALSE(rd::base64_decode("Z===").has_value());
}

TEST(PayloadLimits, FailedEntryKeepsInvalidUtf8ByteExact) {
    FailedJob f;
    f.payload = std::string("{\"job\": \"x\xff\xfe\", \"nul\": \"\0\"}", 27);
    f.queue = "main";
    f.error = "malformed payload";
    f.worker = "h:1:main";
    f.failed_at = 1.5;
    std::string text = f.to_json();
    EXPECT_NE(text.find("\"payload_base64\": \""), std::string::npos) << text;
    EXPECT_TRUE(rd::valid_utf8(text));  // the entry itself is valid JSON text
    FailedJob back = FailedJob::from_json(text);
    EXPECT_EQ(back.payload, f.payload);
    EXPECT_EQ(back.queue, "main");
    EXPECT_EQ(back.entry, text);

    // Valid UTF-8 is written as it was, without the base64 copy.
    f.payload = "{\"job\": \"caf\xc3\xa9\"}";
    text = f.to_json();
    EXPECT_EQ(text.find("payload_base64"), std::string::npos);
    EXPECT_EQ(FailedJob::from_json(text).payload, f.payload);
}

TEST(PayloadLimits, FailedEntryWithBadBase64IsAQueueError) {
    EXPECT_THROW_MSG(FailedJob::from_json(R"({"payload": "?", "payload_base64": "!!", "queue": "main", )"
                                          R"("error": "e", "worker": "w", "failed_at": 1})"),
                     retools::QueueError, "payload_base64");
}
