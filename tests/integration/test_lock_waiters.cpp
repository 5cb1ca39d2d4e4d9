// Waiters share connections: any number of Lock waiters in a process wait on
// the one Pub/Sub connection of their Connection (src/client/signal_hub.*),
// not a socket each, and a release still wakes one of them at once.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/lock.hpp>
#include <retools/read_write_lock.hpp>

#include "redis_server.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
namespace rt = retools::test;
using WaitersClock = std::chrono::steady_clock;

namespace {

long long clients_of(const retools::Connection& admin) {
    const std::string list = admin.command("CLIENT", "LIST").as_string();
    return std::count(list.begin(), list.end(), '\n');
}

retools::Connection admin_of(const rt::RedisServer& server) {
    auto options = server.options();
    options.multiplex = false;
    return retools::Connection{options};
}

}  // namespace

TEST(LockWaiters, AThousandWaitersShareAFewSocketsAndEachGetsTheLockOnce) {
    rt::RedisServer server;
    retools::Connection conn{server.options()};
    retools::Connection admin = admin_of(server);
    const retools::LockOptions options{.expires = 60s, .timeout = 60s, .connection = conn};
    retools::Lock holder{"hot", options};
    constexpr int kWaiters = 1000;
    std::atomic<int> inside{0}, overlapped{0}, acquired{0}, started{0};
    std::atomic<WaitersClock::rep> released_at{0};
    std::mutex handovers_mutex;
    std::vector<double> handovers_ms;
    std::vector<std::thread> threads;
    for (int i = 0; i < kWaiters; ++i) {
        threads.emplace_back([&] {
            retools::Lock lock{"hot", options, std::defer_lock};
            ++started;
            lock.lock();
            const auto now = WaitersClock::now().time_since_epoch().count();
            if (++inside > 1) ++overlapped;
            {
                std::lock_guard guard(handovers_mutex);
                handovers_ms.push_back(static_cast<double>(now - released_at.load()) / 1e6);
            }
            ++acquired;
            --inside;
            released_at = WaitersClock::now().time_since_epoch().count();
            lock.unlock();
        });
    }
    ASSERT_TRUE(rt::wait_until([&] { return started.load() == kWaiters; }, 20s));
    std::this_thread::sleep_for(300ms);  // every waiter has tried once and waits
    // conn's shared socket, its Pub/Sub socket, admin; a few pooled ones at most.
    EXPECT_LE(clients_of(admin), 8);
    released_at = WaitersClock::now().time_since_epoch().count();
    holder.unlock();
    for (auto& t : threads) t.join();
    EXPECT_EQ(acquired.load(), kWaiters);
    EXPECT_EQ(overlapped.load(), 0);
    std::sort(handovers_ms.begin(), handovers_ms.end());
    EXPECT_LE(handovers_ms[handovers_ms.size() / 2], 10.0) << "median hand-over in ms";
}

TEST(LockWaiters, AWaiterIsWokenByARelease) {
    rt::RedisServer server;
    retools::Connection conn{server.options()};
    // A long retry delay: only the release's message can wake the waiter soon.
    const retools::LockOptions options{.expires = 60s, .timeout = 10s, .connection = conn,
                                       .max_retry_delay = 5000ms};
    retools::Lock holder{"woken", options};
    std::atomic<WaitersClock::rep> got_it{0};
    std::thread waiter([&] {
        retools::Lock lock{"woken", options};  // waits
        got_it = WaitersClock::now().time_since_epoch().count();
    });
    std::this_thread::sleep_for(1500ms);  // past its first few backoff steps
    const auto released = WaitersClock::now();
    holder.unlock();
    waiter.join();
    const auto latency = WaitersClock::time_point(WaitersClock::duration(got_it.load())) - released;
    EXPECT_LT(latency, 200ms);
}

TEST(LockWaiters, ReadersWaitingForAWriterAreAllWoken) {
    rt::RedisServer server;
    retools::Connection conn{server.options()};
    const retools::LockOptions options{.expires = 60s, .timeout = 10s, .connection = conn,
                                       .max_retry_delay = 5000ms};
    retools::ReadWriteLock writer{"rw-woken", options};
    writer.lock();
    std::atomic<int> reading{0};
    std::vector<std::thread> readers;
    for (int i = 0; i < 8; ++i)
        readers.emplace_back([&] {
            retools::ReadWriteLock rw{"rw-woken", options};
            rw.lock_shared();
            ++reading;
            std::this_thread::sleep_for(300ms);
            rw.unlock_shared();
        });
    std::this_thread::sleep_for(1500ms);
    writer.unlock();
    // All eight read together, woken by the one release (not by their 5 s backoff).
    EXPECT_TRUE(rt::wait_until([&] { return reading.load() == 8; }, 1s));
    for (auto& t : readers) t.join();
}

TEST(LockWaiters, TheSharedSubscriptionEndsWhenNobodyWaits) {
    rt::RedisServer server;
    retools::Connection conn{server.options()};
    retools::Connection admin = admin_of(server);
    const retools::LockOptions options{.expires = 60s, .timeout = 5s, .connection = conn};
    {
        retools::Lock holder{"idle", options};
        std::thread waiter([&] { retools::Lock lock{"idle", options}; });
        std::this_thread::sleep_for(300ms);
        holder.unlock();
        waiter.join();
    }
    const long long while_used = clients_of(admin);
    EXPECT_TRUE(rt::wait_until([&] { return clients_of(admin) < while_used; }, 5s))
        << "the Pub/Sub connection should close once no waiter is left";
}
