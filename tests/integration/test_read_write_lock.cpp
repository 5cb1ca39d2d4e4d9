// ReadWriteLock against a real server: readers overlap, a writer excludes
// everyone, a writer is not starved by a stream of readers, holds expire
// (a SIGKILLed reader frees its part) or renew, std::shared_lock and
// std::unique_lock drive it, fencing tokens grow.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/read_write_lock.hpp>

#include "process.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::LockOptions;
using retools::ReadWriteLock;
using RwClock = std::chrono::steady_clock;
namespace rt = retools::test;

class ReadWriteLockTest : public rt::RedisTest {};

TEST_F(ReadWriteLockTest, EightReadersOverlap) {
    std::atomic<int> inside{0}, most{0};
    std::barrier start(8);
    std::vector<std::thread> readers;
    const auto t0 = RwClock::now();
    for (int i = 0; i < 8; ++i)
        readers.emplace_back([&] {
            ReadWriteLock rw{"config", {.expires = 5s, .timeout = 2s}};
            start.arrive_and_wait();
            std::shared_lock reader{rw};
            const int now = ++inside;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {}
            std::this_thread::sleep_for(300ms);
            --inside;
        });
    for (auto& t : readers) t.join();
    EXPECT_EQ(most.load(), 8);
    EXPECT_LT(RwClock::now() - t0, 1500ms);  // together, not one after another (2.4 s)
    EXPECT_EQ(conn.command("EXISTS", "config:readers").as_integer(), 0);  // the last one left
}

TEST_F(ReadWriteLockTest, AWriterExcludesReadersAndWriters) {
    ReadWriteLock writer{"doc", {.expires = 5s, .timeout = 0s}};
    ASSERT_TRUE(writer.try_lock());
    EXPECT_TRUE(writer.held_exclusive());
    EXPECT_EQ(conn.command("PTTL", "doc").as_integer() > 0, true);
    ReadWriteLock reader{"doc", {.expires = 5s, .timeout = 0s}};
    ReadWriteLock other{"doc", {.expires = 5s, .timeout = 0s}};
    EXPECT_FALSE(reader.try_lock_shared());
    EXPECT_FALSE(other.try_lock());
    EXPECT_THROW(reader.lock_shared(), retools::LockTimeout);
    const auto first = writer.fencing_token();
    EXPECT_EQ(writer.release(), retools::ReleaseResult::released);
    ASSERT_TRUE(reader.try_lock_shared());
    EXPECT_GT(reader.fencing_token(), first);
    EXPECT_FALSE(other.try_lock());  // a reader is in
    reader.unlock_shared();
    EXPECT_TRUE(other.try_lock());
    EXPECT_THROW((void)other.try_lock(), retools::ConfigurationError);  // not re-entrant
}

TEST_F(ReadWriteLockTest, AWriterIsNotStarvedByAStreamOfReaders) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> readers;
    for (int i = 0; i < 4; ++i)
        readers.emplace_back([&, i] {
            ReadWriteLock rw{"hot", {.expires = 5s, .timeout = 10s, .max_retry_delay = 20ms}};
            std::this_thread::sleep_for(std::chrono::milliseconds(25 * i));  // staggered: always someone in
            while (!stop) {
                std::shared_lock reader{rw};
                std::this_thread::sleep_for(100ms);
            }
        });
    std::this_thread::sleep_for(300ms);
    ReadWriteLock writer{"hot", {.expires = 5s, .timeout = 0s, .max_retry_delay = 20ms}};
    const auto t0 = RwClock::now();
    const bool got = writer.try_lock_for(3s);
    const auto waited = RwClock::now() - t0;
    if (got) writer.unlock();
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_TRUE(got);
    EXPECT_LT(waited, 400ms);  // about one reader's hold (100 ms), not the stream's length
}

TEST_F(ReadWriteLockTest, AKilledReadersHoldExpiresAndARenewedOneDoesNot) {
    auto child = rt::ChildProcess::fork([] {
        ReadWriteLock rw{"crash", {.expires = 300ms}};
        rw.lock_shared();
        for (;;) std::this_thread::sleep_for(1s);
        return 0;
    });
    ASSERT_TRUE(rt::wait_until([&] { return conn.command("ZCARD", "crash:readers").as_integer() == 1; }, 5s));
    child.signal(SIGKILL);
    (void)child.exit_code(5s);
    ReadWriteLock writer{"crash", {.expires = 5s, .timeout = 0s, .max_retry_delay = 20ms}};
    const auto t0 = RwClock::now();
    EXPECT_TRUE(writer.try_lock_for(2s));
    EXPECT_LT(RwClock::now() - t0, 1s);  // at most the reader's 300 ms
    writer.unlock();

    ReadWriteLock renewing{"renewed", {.expires = 200ms, .auto_renew = true}};
    renewing.lock_shared();
    ReadWriteLock other{"renewed", {.expires = 5s, .timeout = 0s}};
    const auto until = RwClock::now() + 700ms;
    while (RwClock::now() < until) {
        EXPECT_FALSE(other.try_lock());
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_FALSE(renewing.renewal_failed());
    EXPECT_EQ(renewing.release(), retools::ReleaseResult::released);
    EXPECT_TRUE(other.try_lock());
}

TEST_F(ReadWriteLockTest, ExtendAndBadOptions) {
    ReadWriteLock rw{"ext", {.expires = 200ms}};
    rw.lock_shared();
    rw.extend(5s);
    std::this_thread::sleep_for(300ms);
    ReadWriteLock writer{"ext", {.timeout = 0s}};
    EXPECT_FALSE(writer.try_lock());
    rw.unlock_shared();
    EXPECT_THROW(rw.extend(1s), retools::LockLost);
    EXPECT_THROW((ReadWriteLock{"", {}}), retools::ConfigurationError);
    EXPECT_THROW((ReadWriteLock{"k", {.min_replicas = 1}}), retools::ConfigurationError);
}
