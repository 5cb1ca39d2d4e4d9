// Job payload parsing and serialization, without a server.
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/job.hpp>
#include <retools/queue.hpp>

#include "queue/python_json.hpp"
#include "util/random_token.hpp"

using nlohmann::json;
using retools::Job;
using retools::QueueError;

namespace {

// What Python retools 0.4 (json.dumps, Python 3 dict order) writes for
// qm.subscriber('job_failure', handler='myapp.jobs:save_error');
// qm.enqueue('myapp.jobs:important', n=3, somearg='fred', metadata={'created': 1732492345.123456})
const std::string python_payload =
    R"({"job_id": "5f1c2d3e4b5a69788796a5b4c3d2e1f0", "job": "myapp.jobs:important", )"
    R"("kwargs": {"n": 3, "somearg": "fred"}, "events": {"job_failure": ["myapp.jobs:save_error"]}, )"
    R"("metadata": {"created": 1732492345.123456}, "state": {}})";

std::string parse_error(std::string_view payload) {
    try {
        Job::from_payload(payload, "main");
    } catch (const QueueError& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST(JobPayload, ParsesWhatPythonWrites) {
    Job job = Job::from_payload(python_payload, "main");
    EXPECT_EQ(job.id(), "5f1c2d3e4b5a69788796a5b4c3d2e1f0");
    EXPECT_EQ(job.name(), "myapp.jobs:important");
    EXPECT_EQ(job.queue(), "main");
    EXPECT_EQ(job.queue_key(), "retools:queue:main");
    EXPECT_EQ(job.kwargs(), (json{{"somearg", "fred"}, {"n", 3}}));
    EXPECT_EQ(job.handlers("job_failure"), std::vector<std::string>{"myapp.jobs:save_error"});
    EXPECT_TRUE(job.handlers("job_prerun").empty());
    EXPECT_DOUBLE_EQ(job.metadata()["created"].get<double>(), 1732492345.123456);
    EXPECT_EQ(job.state(), json::object());
    EXPECT_EQ(job.payload(), python_payload);
}

TEST(JobPayload, ReserializesByteForByteLikePython) {
    Job job = Job::from_payload(python_payload, "main");
    EXPECT_EQ(job.to_json(), python_payload);
}

TEST(JobPayload, EscapesStringsLikePythonEnsureAscii) {
    // Python: json.dumps({"s": "caf\u00e9 \u2603 \U0001F600 \"q\" \\ \n\t\x01\x7f"})
    const std::string python_text =
        R"({"job_id": "ab", "job": "m:f", "kwargs": {"s": "caf\u00e9 \u2603 \ud83d\ude00 \"q\" \\ \n\t\u0001\u007f"}, )"
        R"("events": {}, "metadata": {}, "state": {"big": 1e+16, "f": 0.1, "l": [1, 2.0, null, true, false], "o": {}}})";
    Job job = Job::from_payload(python_text, "main");
    EXPECT_EQ(job.kwargs()["s"], "caf\u00e9 \u2603 \U0001F600 \"q\" \\ \n\t\x01\x7f");
    EXPECT_EQ(job.to_json(), python_text);
}

TEST(JobPayload, WritesNumbersLikePython) {
    // Python: json.dumps of the same state (checked against CPython 3).
    const std::string python_text =
        R"({"job_id": "ab", "job": "m:f", "kwargs": {}, "events": {}, "metadata": {}, )"
        R"("state": {"i": -7, "n": -0.5, "u": 18446744073709551615, "x": 1e-05, "y": 1.2345678901234568e+17, "z": 1e+22}})";
    Job job = Job::from_payload(python_text, "main");
    EXPECT_EQ(job.to_json(), python_text);
    job.state() = {{"t", 1732492345.123456}, {"w", 2.0}};
    EXPECT_NE(job.to_json().find(R"("state": {"t": 1732492345.123456, "w": 2.0})"), std::string::npos);
}

TEST(JobPayload, MissingMetadataAndNullStateDefaultToEmptyObjects) {
    Job job =
        Job::from_payload(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "state": null})", "q");
    EXPECT_EQ(job.metadata(), json::object());
    EXPECT_EQ(job.state(), json::object());
    EXPECT_EQ(job.to_json(),
              R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "metadata": {}, "state": {}})");
}

TEST(JobPayload, RejectsMalformedPayloadsNamingTheProblem) {
    EXPECT_NE(parse_error("not json").find("not valid JSON"), std::string::npos);
    EXPECT_NE(parse_error("").find("not valid JSON"), std::string::npos);
    EXPECT_NE(parse_error("[1, 2]").find("not an object"), std::string::npos);
    const std::string ok_rest = R"("kwargs": {}, "events": {}, "metadata": {}, "state": {})";
    EXPECT_NE(parse_error(R"({"job": "m:f", )" + ok_rest + "}").find("\"job_id\""), std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": 5, "job": "m:f", )" + ok_rest + "}").find("\"job_id\""),
              std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", )" + ok_rest + "}").find("\"job\""), std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "", )" + ok_rest + "}").find("\"job\""),
              std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "m:f", "kwargs": [1], "events": {}, "state": {}})")
                  .find("\"kwargs\""),
              std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "m:f", "events": {}, "state": {}})").find("\"kwargs\""),
              std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "state": {}})").find("\"events\""),
              std::string::npos);
    EXPECT_NE(
        parse_error(
            R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {"job_prerun": "x"}, "state": {}})")
            .find("job_prerun"),
        std::string::npos);
    EXPECT_NE(
        parse_error(
            R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {"job_prerun": [1]}, "state": {}})")
            .find("job_prerun"),
        std::string::npos);
    EXPECT_NE(parse_error(
                  R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "metadata": 3, "state": {}})")
                  .find("\"metadata\""),
              std::string::npos);
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}})").find("\"state\""),
              std::string::npos);
    // The original's own test once used "state": "" — a string is rejected, not guessed at.
    EXPECT_NE(parse_error(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "state": ""})")
                  .find("\"state\""),
              std::string::npos);
}

TEST(JobPayload, RefusesValuesPythonJsonCannotRoundTrip) {
    Job job = Job::from_payload(python_payload, "main");
    job.state()["x"] = std::nan("");
    EXPECT_THROW(job.to_json(), QueueError);
    job.state()["x"] = std::string("\xff\xfe");
    EXPECT_THROW(job.to_json(), QueueError);
    job.state() = json::array();
    EXPECT_THROW(job.to_json(), QueueError);
}

TEST(JobPayload, RetryAndResultConventions) {
    auto make = [](const std::string& metadata, const std::string& state) {
        return Job::from_payload(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "metadata": )" +
                                     metadata + R"(, "state": )" + state + "}",
                                 "main");
    };
    EXPECT_FALSE(make("{}", "{}").next_retry_delay());
    EXPECT_EQ(make("{}", "{}").retries_done(), 0);
    auto first = make(R"({"retries": 3, "retry_backoff": 0.5})", "{}").next_retry_delay();
    ASSERT_TRUE(first);
    EXPECT_DOUBLE_EQ(first->count(), 0.5);
    auto third = make(R"({"retries": 3, "retry_backoff": 0.5})", R"({"retried": 2})").next_retry_delay();
    ASSERT_TRUE(third);
    EXPECT_DOUBLE_EQ(third->count(), 2.0);
    EXPECT_FALSE(make(R"({"retries": 3})", R"({"retried": 3})").next_retry_delay());
    EXPECT_DOUBLE_EQ(make(R"({"retries": 1})", "{}").next_retry_delay()->count(), 1.0);
    EXPECT_THROW(make(R"({"retries": "3"})", "{}").next_retry_delay(), QueueError);
    EXPECT_THROW(make(R"({"retries": 3, "retry_backoff": -1})", "{}").next_retry_delay(), QueueError);
    EXPECT_THROW(make(R"({"retries": 3})", R"({"retried": "x"})").next_retry_delay(), QueueError);
    // Capped: retry_max_delay, default an hour.
    EXPECT_DOUBLE_EQ(make(R"({"retries": 30})", R"({"retried": 20})").next_retry_delay()->count(), 3600.0);
    EXPECT_DOUBLE_EQ(
        make(R"({"retries": 9, "retry_backoff": 10, "retry_max_delay": 60})", R"({"retried": 5})")
            .next_retry_delay()
            ->count(),
        60.0);
    EXPECT_THROW(make(R"({"retries": 3, "retry_max_delay": "x"})", "{}").next_retry_delay(), QueueError);

    EXPECT_FALSE(make("{}", "{}").result_ttl());
    EXPECT_FALSE(make(R"({"result_ttl": 0})", "{}").result_ttl());
    EXPECT_EQ(make(R"({"result_ttl": 60})", "{}").result_ttl(), std::chrono::seconds(60));
    EXPECT_EQ(make(R"({"result_ttl": 0.2})", "{}").result_ttl(), std::chrono::seconds(1));
    EXPECT_THROW(make(R"({"result_ttl": "60"})", "{}").result_ttl(), QueueError);
    EXPECT_THROW(make(R"({"result_ttl": -1})", "{}").result_ttl(), QueueError);
}

TEST(JobIds, AreUuid4HexAndUniqueAcrossFork) {
    std::string id = retools::detail::uuid4_hex();
    ASSERT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(id[12], '4');                                          // version
    EXPECT_NE(std::string("89ab").find(id[16]), std::string::npos);  // variant
    std::set<std::string> seen;
    for (int i = 0; i < 10000; ++i) seen.insert(retools::detail::uuid4_hex());
    EXPECT_EQ(seen.size(), 10000u);

    // A forked child must not repeat the ids its parent generates next.
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::string child_id = retools::detail::uuid4_hex();
        ssize_t n = write(fds[1], child_id.data(), child_id.size());
        _exit(n == 32 ? 0 : 1);
    }
    std::string parent_id = retools::detail::uuid4_hex();
    char buf[32];
    ASSERT_EQ(read(fds[0], buf, sizeof buf), 32);
    int status = 0;
    waitpid(pid, &status, 0);
    close(fds[0]);
    close(fds[1]);
    EXPECT_NE(std::string(buf, 32), parent_id);
}

TEST(QueueNames, Validation) {
    EXPECT_NO_THROW(retools::detail::validate_queue_name("high"));
    EXPECT_THROW(retools::detail::validate_queue_name(""), retools::ConfigurationError);
    EXPECT_THROW(retools::detail::validate_queue_name("a:b"), retools::ConfigurationError);
    EXPECT_THROW(retools::detail::validate_queue_name("a,b"), retools::ConfigurationError);
    // A line break would split a worker's record; the message shows it escaped.
    try {
        retools::detail::validate_queue_name("mail\nurgent");
        ADD_FAILURE() << "a queue name with a newline was accepted";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_NE(std::string(e.what()).find(R"("mail\nurgent")"), std::string::npos) << e.what();
    }
    EXPECT_THROW(retools::detail::validate_queue_name("mail\r"), retools::ConfigurationError);
    EXPECT_THROW(retools::detail::validate_job_name(""), retools::ConfigurationError);
    EXPECT_THROW(retools::QueueManager(retools::Connection{}, "bad:name"), retools::ConfigurationError);
}
