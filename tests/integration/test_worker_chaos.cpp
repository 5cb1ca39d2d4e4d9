// Chaos: 10,000 jobs through a fleet of worker processes that are SIGKILLed at
// random and replaced, while Redis itself is killed and restarted (AOF,
// appendfsync always). Every job must finish; nothing may be left in the
// queue, the processing lists or retools:failed; duplicate runs are printed
// and bounded. Its own binary (test_worker_chaos), so CI can run it once.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "process.hpp"
#include "queue/keys.hpp"
#include "redis_server.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

constexpr int total_jobs = 10000;
constexpr int fleet_size = 4;
constexpr std::size_t threads_per_worker = 4;

rt::ChildProcess start_worker(const retools::ConnectionOptions& options) {
    return rt::ChildProcess::fork([options] {
        retools::Connection c{options};
        retools::Worker w{{"chaos"},
                          {.connection = c,
                           .concurrency = threads_per_worker,
                           .handle_signals = false,
                           .log = retools::WorkerLog::none,
                           .heartbeat_interval = 100ms,
                           .heartbeat_timeout = 500ms,
                           .max_recoveries = 0}};
        w.register_job("chaos:run", [c](const json& kw) -> json {
            // The job's own write may meet the Redis restart: it waits for Redis
            // (a job that raised then would be failed, correctly, but this test
            // is about the fleet losing nothing).
            for (int i = 0;; ++i) {
                try {
                    c.command("HINCRBY", "chaos:runs", kw.at("n").get<int>(), 1);
                    break;
                } catch (const retools::Error&) {  // cut off, or LOADING while Redis reads its AOF
                    if (i > 250) throw;
                    std::this_thread::sleep_for(20ms);
                }
            }
            std::this_thread::sleep_for(2ms);
            return nullptr;
        });
        // Redis errors while working are retried; at start-up they throw: then
        // this process exits and the test starts another one.
        w.work({.interval = 20ms});
        return 0;
    });
}

template <class F>
auto retry(F f) {
    for (int i = 0;; ++i) {
        try {
            return f();
        } catch (const retools::Error&) {
            if (i > 200) throw;
            std::this_thread::sleep_for(20ms);
        }
    }
}

}  // namespace

TEST(WorkerChaos, EveryJobFinishesThroughWorkerKillsAndARedisRestart) {
    rt::RedisServer server{{.args = {"--appendonly", "yes", "--appendfsync", "always"}}};
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 1000ms;
    retools::Connection conn{options};
    {
        std::vector<json> args;
        for (int i = 0; i < total_jobs; ++i) args.push_back({{"n", i}});
        retools::QueueManager{conn, "chaos"}.enqueue_many("chaos:run", args);
    }

    std::vector<rt::ChildProcess> fleet;
    for (int i = 0; i < fleet_size; ++i) fleet.push_back(start_worker(options));
    std::mt19937 rng(12345);
    int kills = 0;
    bool restarted = false;
    auto deadline = std::chrono::steady_clock::now() + 50s;
    auto finished = [&] {
        return retry([&] {
            if (conn.command("HLEN", "chaos:runs").as_integer() < total_jobs) return false;
            if (conn.command("LLEN", keys::queue("chaos", false)).as_integer() != 0) return false;
            return conn.command("KEYS", "retools:processing:*").size() == 0;
        });
    };
    while (!finished()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            std::string state = fmt::format("runs {}, queue {}, failed {}, delayed {}",
                                            conn.command("HLEN", "chaos:runs").as_integer(),
                                            conn.command("LLEN", keys::queue("chaos", false)).as_integer(),
                                            conn.command("LLEN", "retools:failed").as_integer(),
                                            conn.command("ZCARD", "retools:delayed").as_integer());
            for (const auto& f : conn.command("LRANGE", "retools:failed", 0, 2).as_array())
                state += fmt::format("; failed entry {}", f.as_string().substr(0, 300));
            for (const auto& k : conn.command("KEYS", "retools:processing:*").as_array())
                state += fmt::format("; {} holds {}", k.as_string(),
                                     conn.command("LLEN", k.as_string()).as_integer());
            for (const auto& k : conn.command("SMEMBERS", "retools:workers").as_array())
                state += fmt::format("; registered {}", k.as_string());
            for (const auto& k : conn.command("ZRANGE", "retools:heartbeats", 0, -1, "WITHSCORES").as_array())
                state += fmt::format("; beat {}", k.as_string());
            FAIL() << "the fleet did not drain the queue in time: " << state;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 200));
        if (fleet.size() < 2) continue;
        // A random worker dies, with whatever it was running; another replaces it.
        auto& victim = fleet[rng() % fleet.size()];
        victim.signal(SIGKILL);
        victim.exit_code(5s);
        victim = start_worker(options);
        ++kills;
        // Exited workers (they could not start while Redis was down) are replaced too.
        for (auto& w : fleet)
            if (!w.running()) w = start_worker(options);
        if (!restarted &&
            retry([&] { return conn.command("HLEN", "chaos:runs").as_integer(); }) > total_jobs / 3) {
            server.kill();
            std::this_thread::sleep_for(300ms);
            server.start();
            restarted = true;
        }
    }
    for (auto& w : fleet) w.signal(SIGKILL);
    for (auto& w : fleet) w.exit_code(5s);

    EXPECT_TRUE(restarted);
    long long runs = 0, most = 0;
    auto all = conn.command("HGETALL", "chaos:runs").as_array();
    for (std::size_t i = 1; i < all.size(); i += 2) {
        long long r = std::stoll(all[i].as_string());
        runs += r;
        most = std::max(most, r);
    }
    const long long duplicates = runs - total_jobs;
    std::printf(
        "chaos: %d jobs, %d worker kills, 1 Redis restart, %lld duplicate runs (a job ran at most %lld "
        "times)\n",
        total_jobs, kills, duplicates, most);
    EXPECT_EQ(all.size() / 2, static_cast<std::size_t>(total_jobs));
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 0);
    EXPECT_EQ(conn.command("LLEN", keys::queue("chaos", false)).as_integer(), 0);
    EXPECT_EQ(conn.command("KEYS", "retools:processing:*").size(), 0u);
    // A kill repeats at most what its worker had run but not yet acknowledged
    // (a few ms of jobs per thread); the restart, what every worker had.
    EXPECT_LE(duplicates, static_cast<long long>((kills + fleet_size) * threads_per_worker * 4));
}
