// A real library message reaches a custom log handler (<retools/log.hpp>):
// a worker's failed job and, with WorkerLog::jobs, its succeeded one.
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <retools/log.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "redis_test.hpp"

using nlohmann::json;
using retools::LogLevel;
namespace rt = retools::test;

namespace {

class LogTest : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        retools::set_log_handler([this](LogLevel level, std::string_view text) {
            std::lock_guard lock(mutex);
            lines.emplace_back(level, std::string(text));
        });
    }
    void TearDown() override { retools::set_log_handler({}); }

    std::vector<std::pair<LogLevel, std::string>> received() {
        std::lock_guard lock(mutex);
        return lines;
    }

    std::mutex mutex;
    std::vector<std::pair<LogLevel, std::string>> lines;
};

retools::WorkerOptions options(const retools::Connection& conn, retools::WorkerLog log) {
    return {.connection = conn, .handle_signals = false, .log = log};
}

}  // namespace

TEST_F(LogTest, AWorkersFailedJobIsAWarningToTheHandler) {
    retools::QueueManager qm{conn};
    const std::string id = qm.enqueue("tests.log:boom", {{"x", 1}});
    retools::Worker w{{"main"}, options(conn, retools::WorkerLog::failures)};
    w.register_job("tests.log:boom", [](const json&) -> json { throw std::runtime_error("kaboom"); });
    EXPECT_EQ(w.work({.burst = true}).failed, 1u);

    auto got = received();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].first, LogLevel::warning);
    const std::string& text = got[0].second;
    EXPECT_EQ(text.rfind("retools-worker: job " + id + " tests.log:boom queue=main ", 0), 0u) << text;
    EXPECT_NE(text.find("kaboom"), std::string::npos) << text;
    EXPECT_EQ(text.find('\n'), std::string::npos) << "one line, no newline: " << text;
}

TEST_F(LogTest, WithJobsLoggingASucceededJobIsInfo) {
    retools::QueueManager qm{conn};
    const std::string id = qm.enqueue("tests.log:fine", {{"x", 1}});
    retools::Worker w{{"main"}, options(conn, retools::WorkerLog::jobs)};
    w.register_job("tests.log:fine", [](const json& kw) -> json { return kw.at("x"); });
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);

    auto got = received();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].first, LogLevel::info);
    EXPECT_EQ(got[0].second.rfind("retools-worker: job " + id + " tests.log:fine queue=main ", 0), 0u)
        << got[0].second;
}
