// Sentinel: discovery in list order, and failovers (coordinated, and by
// SIGKILL of the master) while every component works, against a real master,
// replica and three sentinels (tests/support/sentinel_set.hpp).

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/retools.hpp>

#include "expect.hpp"
#include "redis_server.hpp"
#include "sentinel_set.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::test::SentinelSet;
using Clock = std::chrono::steady_clock;

namespace {

retools::Connection node(int port) {
    return retools::Connection{retools::ConnectionOptions{.port = port, .pool_size = 2}};
}

std::size_t processing_entries(retools::Connection& direct) {
    std::size_t n = 0;
    for (const auto& key : direct.command("KEYS", "retools:processing:*").as_array())
        n += static_cast<std::size_t>(direct.command("LLEN", key.as_string()).as_integer());
    return n;
}

// Four threads run cached calls, lock cycles and enqueues round robin while a
// worker drains the jobs; every outcome is counted, with its time.
class Load {
public:
    explicit Load(retools::Connection conn) : conn_(std::move(conn)), qm_(conn_) {
        retools::global_connection() = conn_;
        retools::CacheRegion::add_region("sentinel_test", 50ms);  // short: regenerations take the lock
        worker_.register_job("sentinel.count", [this](const nlohmann::json& kwargs) -> nlohmann::json {
            std::lock_guard lock(mutex_);
            ++processed_[kwargs.at("token").get<std::string>()];
            return nullptr;
        });
        worker_thread_ = std::thread([this] { worker_.work({.interval = 100ms, .blocking = true}); });
        for (int t = 0; t < 4; ++t) threads_.emplace_back([this, t] { run(t); });
    }
    ~Load() {
        stop_producers();
        worker_.stop();
        if (worker_thread_.joinable()) worker_thread_.join();
    }

    void stop_producers() {
        stop_ = true;
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }

    struct Counts {
        std::size_t ok = 0, failed = 0;
    };
    // Successes and failures since `since`.
    Counts since(Clock::time_point since) const {
        std::lock_guard lock(mutex_);
        Counts c;
        for (auto& [at, ok] : outcomes_) (ok ? c.ok : c.failed) += at >= since ? 1 : 0;
        return c;
    }
    std::vector<std::string> errors() const {
        std::lock_guard lock(mutex_);
        return errors_;
    }
    std::map<int, std::size_t> ok_by_kind(Clock::time_point since) const {
        std::lock_guard lock(mutex_);
        std::map<int, std::size_t> out;
        for (auto& [at, kind] : kinds_)
            if (at >= since) ++out[kind];
        return out;
    }
    // Enqueued (acknowledged) tokens the worker never ran, and tokens it ran twice or more.
    std::size_t lost() const {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& t : enqueued_) n += processed_.count(t) ? 0 : 1;
        return n;
    }
    std::size_t duplicates() const {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [t, times] : processed_) n += times > 1 ? times - 1 : 0;
        return n;
    }
    std::size_t enqueued() const {
        std::lock_guard lock(mutex_);
        return enqueued_.size();
    }
    std::size_t processed() const {
        std::lock_guard lock(mutex_);
        return processed_.size();
    }

private:
    void run(int t) {
        auto cached =
            retools::cache_region("sentinel_test", "tests.sentinel.double", [](int k) { return 2 * k; });
        for (long i = 0; !stop_; ++i) {
            const int kind = static_cast<int>(i % 4);
            std::string token = fmt::format("t{}-{}", t, i);
            try {
                if (kind == 0) {
                    if (cached(static_cast<int>(i % 20)) != 2 * static_cast<int>(i % 20))
                        throw std::runtime_error("wrong cached value");
                } else if (kind == 1) {
                    retools::Lock lock{fmt::format("sentinel-lock-{}", t),
                                       {.expires = 2s, .timeout = 8s, .connection = conn_}};
                } else if (kind == 2) {
                    qm_.enqueue("sentinel.count", {{"token", token}});
                    std::lock_guard lock(mutex_);
                    enqueued_.insert(token);
                } else {
                    conn_.command("INCR", "sentinel:writes");
                    ++writes_;
                }
                std::lock_guard lock(mutex_);
                outcomes_.emplace_back(Clock::now(), true);
                kinds_.emplace_back(Clock::now(), kind);
            } catch (const std::exception& e) {
                std::lock_guard lock(mutex_);
                outcomes_.emplace_back(Clock::now(), false);
                const char* names[] = {"cache", "lock", "enqueue", "INCR"};
                errors_.push_back(fmt::format("{}: {}", names[kind], e.what()));
            }
            std::this_thread::sleep_for(1ms);
        }
    }

    retools::Connection conn_;
    retools::QueueManager qm_;
    retools::Worker worker_{{"main"}, {.connection = conn_, .concurrency = 2, .handle_signals = false}};
    std::thread worker_thread_;
    std::vector<std::thread> threads_;
    std::atomic<bool> stop_{false};

public:
    std::atomic<long long> writes_{0};  // INCRs acknowledged

private:
    mutable std::mutex mutex_;
    std::vector<std::pair<Clock::time_point, bool>> outcomes_;
    std::vector<std::pair<Clock::time_point, int>> kinds_;
    std::vector<std::string> errors_;
    std::set<std::string> enqueued_;
    std::map<std::string, std::size_t> processed_;
};

// After a failover: every operation works against the new master, failures
// stayed under `max_failed`, and the worker drains every job.
void check_after_failover(Load& load, SentinelSet& set, int promoted, std::size_t max_failed,
                          std::size_t max_lost, std::size_t max_duplicates) {
    std::this_thread::sleep_for(500ms);  // the clients hear of the switch
    const auto mark = Clock::now();
    std::this_thread::sleep_for(1500ms);
    auto after = load.since(mark);
    auto kinds = load.ok_by_kind(mark);
    load.stop_producers();
    auto all = load.since(Clock::time_point{});
    for (const auto& e : load.errors()) std::cerr << "  failed during the switch: " << e << "\n";
    EXPECT_EQ(after.failed, 0u) << "operations failed after the switch";
    EXPECT_GT(kinds[0], 0u) << "no cached call succeeded after the switch";
    EXPECT_GT(kinds[1], 0u) << "no lock cycle succeeded after the switch";
    EXPECT_GT(kinds[2], 0u) << "no enqueue succeeded after the switch";
    EXPECT_LE(all.failed, max_failed) << all.ok << " operations succeeded";

    auto direct = node(promoted);
    EXPECT_TRUE(retools::test::wait_until(
        [&] {
            return load.lost() <= max_lost &&
                   direct.command("LLEN", "retools:queue:main").as_integer() == 0 &&
                   processing_entries(direct) == 0;
        },
        20s))
        << "queue " << direct.command("LLEN", "retools:queue:main").as_integer() << ", processing "
        << processing_entries(direct) << ", lost " << load.lost();
    EXPECT_LE(load.lost(), max_lost);
    EXPECT_LE(load.duplicates(), max_duplicates);
    EXPECT_EQ(direct.command("LLEN", "retools:failed").as_integer(), 0);
    // Every acknowledged INCR reached the new master (a failed one may have run too).
    long long counted = std::stoll(direct.command("GET", "sentinel:writes").as_string());
    EXPECT_GE(counted + static_cast<long long>(max_lost), load.writes_.load())
        << "acknowledged writes were lost";
    EXPECT_LE(counted, load.writes_.load() + static_cast<long long>(all.failed));
    EXPECT_GT(kinds[3], 0u) << "no INCR succeeded after the switch";
    std::cerr << "  " << all.ok << " ok, " << all.failed << " failed; " << load.enqueued() << " enqueued, "
              << load.processed() << " run, " << load.lost() << " lost, " << load.duplicates()
              << " run twice; " << load.writes_.load() << " INCRs acknowledged, " << counted << " counted\n";
    (void)set;
}

}  // namespace

TEST(Sentinel, DiscoversTheMasterAndFollowsACoordinatedFailover) {
    SentinelSet set;
    retools::Connection conn{set.url()};
    conn.command("SET", "before", "1");
    EXPECT_EQ(node(set.first_master_port()).command("GET", "before").as_string(), "1");
    ASSERT_TRUE(set.wait_replicated());

    int promoted;
    {
        Load load(conn);
        std::this_thread::sleep_for(1s);
        promoted = set.failover();
        EXPECT_EQ(promoted, set.first_replica_port());
        check_after_failover(load, set, promoted, /*max_failed=*/8, /*max_lost=*/0, /*max_duplicates=*/40);
    }
    EXPECT_EQ(conn.master_switches(), 1u);
    EXPECT_EQ(conn.command("GET", "before").as_string(), "1");
    conn.command("SET", "after", "2");
    EXPECT_EQ(node(promoted).command("GET", "after").as_string(), "2");
}

TEST(Sentinel, MasterKilledTheReplicaIsPromotedAndUsed) {
    SentinelSet set;
    retools::ConnectionOptions o = retools::ConnectionOptions::from_url(set.url());
    o.command_timeout = 8s;  // callers wait out the promotion (down-after 1 s + election)
    retools::Connection conn{o};
    conn.command("SET", "replicated", "yes");
    ASSERT_TRUE(set.wait_replicated());
    {
        Load load(conn);
        std::this_thread::sleep_for(1s);
        set.kill_node(set.first_master_port());
        ASSERT_TRUE(set.wait_for_master(set.first_replica_port(), 20s));
        // Acknowledged writes the replica had not received yet are gone:
        // on loopback a few at most.
        check_after_failover(load, set, set.first_replica_port(), /*max_failed=*/24, /*max_lost=*/10,
                             /*max_duplicates=*/60);
    }
    EXPECT_EQ(conn.command("GET", "replicated").as_string(), "yes");
    EXPECT_EQ(conn.master_switches(), 1u);
}

TEST(Sentinel, FirstSentinelDownDiscoveryUsesTheNext) {
    SentinelSet set;
    set.stop_sentinel(0);
    auto started = Clock::now();
    retools::Connection conn{set.url()};
    conn.command("SET", "k", "v");
    EXPECT_EQ(node(set.first_master_port()).command("GET", "k").as_string(), "v");
    EXPECT_LT(Clock::now() - started, 2s);

    // A first entry where nothing listens at all.
    retools::ConnectionOptions o = retools::ConnectionOptions::from_url(set.url());
    o.sentinel->sentinels.insert(o.sentinel->sentinels.begin(), {"127.0.0.1", retools::test::free_port()});
    retools::Connection other{o};
    EXPECT_EQ(other.command("GET", "k").as_string(), "v");
}

TEST(Sentinel, AllSentinelsDownIsAClearConnectionError) {
    int a = retools::test::free_port(), b = retools::test::free_port();
    retools::Connection conn{
        fmt::format("redis-sentinel://:secret-pw@127.0.0.1:{},127.0.0.1:{}/0?master=mymaster", a, b)};
    auto started = Clock::now();
    EXPECT_THROW_MSG(conn.command("PING"), retools::ConnectionError,
                     fmt::format("no sentinel of \"mymaster\" answered (127.0.0.1:{}, 127.0.0.1:{}", a, b));
    EXPECT_LT(Clock::now() - started, 2s);
    try {
        conn.command("PING");
    } catch (const retools::ConnectionError& e) {
        EXPECT_EQ(std::string(e.what()).find("secret-pw"), std::string::npos) << e.what();
    }
}

TEST(Sentinel, UnknownMasterNameIsNamed) {
    SentinelSet set;
    retools::ConnectionOptions o = retools::ConnectionOptions::from_url(set.url());
    o.sentinel->master = "no-such-master";
    retools::Connection conn{o};
    EXPECT_THROW_MSG(conn.command("PING"), retools::ConnectionError,
                     "does not monitor a master named \"no-such-master\"");
}
