// The log handler (<retools/log.hpp>): the default, a custom handler,
// resetting, swapping while threads log, and handlers that throw or re-enter.
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <retools/log.hpp>
#include <retools/retools.hpp>

using retools::LogLevel;

namespace {

// Points fd 2 at a pipe until finish(), which returns what was written there.
class StderrCapture {
public:
    StderrCapture() {
        std::fflush(stderr);
        if (::pipe(fds_) != 0) throw std::runtime_error("pipe");
        saved_ = ::dup(2);
        ::dup2(fds_[1], 2);
        ::close(fds_[1]);
    }
    StderrCapture(const StderrCapture&) = delete;
    StderrCapture& operator=(const StderrCapture&) = delete;
    ~StderrCapture() { finish(); }

    std::string finish() {
        if (saved_ < 0) return text_;
        std::fflush(stderr);
        ::dup2(saved_, 2);  // the pipe's last write end closes: reads end at EOF
        ::close(saved_);
        saved_ = -1;
        char buf[4096];
        for (ssize_t n; (n = ::read(fds_[0], buf, sizeof buf)) > 0;) text_.append(buf, static_cast<std::size_t>(n));
        ::close(fds_[0]);
        return text_;
    }

private:
    int fds_[2] = {-1, -1};
    int saved_ = -1;
    std::string text_;
};

struct Recorded {
    std::mutex mutex;
    std::vector<std::pair<LogLevel, std::string>> lines;
    auto handler() {
        return [this](LogLevel level, std::string_view text) {
            std::lock_guard lock(mutex);
            lines.emplace_back(level, std::string(text));
        };
    }
};

class LogHandlerTest : public ::testing::Test {
protected:
    void TearDown() override { retools::set_log_handler({}); }
};

}  // namespace

TEST_F(LogHandlerTest, DefaultWritesOneLinePerMessageWithTheLevelToStderr) {
    StderrCapture capture;
    retools::detail::log(LogLevel::warning, "retools: first");
    retools::detail::log(LogLevel::info, "second");
    EXPECT_EQ(capture.finish(), "[warning] retools: first\n[info] second\n");
}

TEST_F(LogHandlerTest, CustomHandlerReceivesLevelAndTextAndStderrStaysQuiet) {
    Recorded rec;
    retools::set_log_handler(rec.handler());
    StderrCapture capture;
    retools::detail::log(LogLevel::debug, "d");
    retools::detail::log(LogLevel::info, "i");
    retools::detail::log(LogLevel::warning, "w");
    retools::detail::log(LogLevel::error, "e");
    EXPECT_EQ(capture.finish(), "");
    std::vector<std::pair<LogLevel, std::string>> want{
        {LogLevel::debug, "d"}, {LogLevel::info, "i"}, {LogLevel::warning, "w"}, {LogLevel::error, "e"}};
    EXPECT_EQ(rec.lines, want);
}

TEST_F(LogHandlerTest, AnEmptyFunctionRestoresTheDefault) {
    Recorded rec;
    retools::set_log_handler(rec.handler());
    retools::detail::log(LogLevel::info, "to the handler");
    retools::set_log_handler({});
    StderrCapture capture;
    retools::detail::log(LogLevel::error, "to stderr");
    EXPECT_EQ(capture.finish(), "[error] to stderr\n");
    ASSERT_EQ(rec.lines.size(), 1u);
    EXPECT_EQ(rec.lines[0].second, "to the handler");
}

TEST_F(LogHandlerTest, AThrowingHandlerFallsBackToStderrAndLoggingGoesOn) {
    int calls = 0;
    retools::set_log_handler([&](LogLevel, std::string_view) {
        ++calls;
        throw std::runtime_error("handler broke");
    });
    StderrCapture capture;
    EXPECT_NO_THROW(retools::detail::log(LogLevel::warning, "kept"));
    EXPECT_NO_THROW(retools::detail::log(LogLevel::info, "kept too"));
    EXPECT_EQ(capture.finish(), "[warning] kept\n[info] kept too\n");
    EXPECT_EQ(calls, 2);
}

TEST_F(LogHandlerTest, AHandlerMaySetTheHandlerAndLogWithoutDeadlock) {
    Recorded second;
    std::vector<std::string> first_saw;
    retools::set_log_handler([&](LogLevel, std::string_view text) {
        first_saw.emplace_back(text);
        retools::detail::log(LogLevel::info, "nested");  // inside a handler: straight to stderr
        retools::set_log_handler(second.handler());      // replaces this very handler while it runs
        first_saw.emplace_back("still alive");           // its captures outlive the swap
    });
    StderrCapture capture;
    retools::detail::log(LogLevel::warning, "one");
    retools::detail::log(LogLevel::warning, "two");
    EXPECT_EQ(capture.finish(), "[info] nested\n");
    EXPECT_EQ(first_saw, (std::vector<std::string>{"one", "still alive"}));
    ASSERT_EQ(second.lines.size(), 1u);
    EXPECT_EQ(second.lines[0].second, "two");
}

TEST_F(LogHandlerTest, ThreadsLogWhileAnotherSwapsHandlersAndNoMessageIsLostOrDoubled) {
    constexpr int threads = 4;
    constexpr int per_thread = 5000;
    std::atomic<int> to_a{0}, to_b{0};
    auto a = [&](LogLevel, std::string_view) { to_a.fetch_add(1, std::memory_order_relaxed); };
    auto b = [&](LogLevel, std::string_view) { to_b.fetch_add(1, std::memory_order_relaxed); };
    retools::set_log_handler(a);

    std::atomic<bool> done{false};
    int swaps = 0;
    std::thread swapper([&] {
        while (!done.load()) {
            retools::set_log_handler(++swaps % 2 ? retools::LogHandler(b) : retools::LogHandler(a));
            std::this_thread::yield();
        }
    });
    std::vector<std::thread> loggers;
    for (int t = 0; t < threads; ++t)
        loggers.emplace_back([t] {
            for (int i = 0; i < per_thread; ++i)
                retools::detail::log(LogLevel::info, "thread " + std::to_string(t) + " message " + std::to_string(i));
        });
    for (auto& l : loggers) l.join();
    done = true;
    swapper.join();

    EXPECT_EQ(to_a.load() + to_b.load(), threads * per_thread);
    EXPECT_GT(swaps, 1);
}

TEST(LogLevel, NamesEachLevel) {
    EXPECT_EQ(retools::to_string(LogLevel::debug), "debug");
    EXPECT_EQ(retools::to_string(LogLevel::info), "info");
    EXPECT_EQ(retools::to_string(LogLevel::warning), "warning");
    EXPECT_EQ(retools::to_string(LogLevel::error), "error");
}
