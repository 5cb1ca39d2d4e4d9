// docs/redis-layout.md lists every key retools writes: a workload of every
// component runs against the test's server, then every key SCAN finds must
// match a key pattern of the document's tables, so the document cannot drift.
#include <chrono>
#include <stdexcept>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/limiter.hpp>
#include <retools/lock.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "queue/test_hooks.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace rt = retools::test;

namespace {

// Names the workload chooses; the document writes them as a leading `<key>`
// (a lock) or `<prefix>` (a limiter).
constexpr const char* lock_name = "layout-lock";
constexpr const char* limiter_prefix = "layout-limiter";

// One documented key (a backticked name in a table's first column) as a
// regular expression: `<...>` is a substituted part (ids may hold `:`, other
// parts do not), `[a\|b]` one of the suffixes, `...` and `*` anything.
std::string to_regex(const std::string& doc_key) {
    std::string out;
    for (std::size_t i = 0; i < doc_key.size();) {
        const char c = doc_key[i];
        if (c == '<') {
            const std::size_t end = doc_key.find('>', i);
            const std::string name = doc_key.substr(i + 1, end - i - 1);
            if (i == 0 && (name == "key" || name == "prefix"))
                out += std::string("(") + lock_name + "|" + limiter_prefix + ")";
            else
                out += name.find("id") != std::string::npos ? ".+" : "[^:]+";
            i = end + 1;
        } else if (c == '[') {
            const std::size_t end = doc_key.find(']', i);
            std::string alternatives = doc_key.substr(i + 1, end - i - 1);
            std::string group = "(";
            for (char a : alternatives)
                if (a != '\\') group += a == '|' ? '|' : a;
            out += group + ")";
            i = end + 1;
        } else if (doc_key.compare(i, 3, "...") == 0) {
            out += ".*";
            i += 3;
        } else if (c == '*') {
            out += ".*";
            ++i;
        } else {
            if (std::string_view(".^$|()?+{}\\").find(c) != std::string_view::npos) out += '\\';
            out += c;
            ++i;
        }
    }
    return out;
}

// Every backticked name in the first cell of the rows of the document's key
// tables (those whose header starts with `| key |`; the Cluster table only
// compares names, it lists no key of its own).
std::vector<std::string> documented_keys() {
    std::ifstream in(RETOOLS_SOURCE_DIR "/docs/redis-layout.md");
    EXPECT_TRUE(in.good()) << "cannot read docs/redis-layout.md";
    std::vector<std::string> keys;
    bool key_table = false;
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with("|")) {
            key_table = false;
            continue;
        }
        if (line.starts_with("| key |")) key_table = true;
        if (!key_table || !line.starts_with("| `")) continue;
        // The first cell ends at the first `|` outside backticks that is not escaped.
        bool in_code = false;
        std::string cell;
        for (std::size_t i = 2; i < line.size(); ++i) {
            if (line[i] == '`') in_code = !in_code;
            if (line[i] == '|' && !in_code && line[i - 1] != '\\') break;
            cell += line[i];
        }
        for (std::size_t at = cell.find('`'); at != std::string::npos; at = cell.find('`', at)) {
            const std::size_t end = cell.find('`', at + 1);
            keys.push_back(cell.substr(at + 1, end - at - 1));
            at = end + 1;
        }
    }
    return keys;
}

std::vector<std::string> scan_all(const retools::Connection& conn) {
    std::vector<std::string> keys;
    std::string cursor = "0";
    do {
        auto r = conn.command("SCAN", cursor, "COUNT", 1000);
        cursor = r[0].as_string();
        for (const auto& k : r[1].as_array()) keys.push_back(k.as_string());
    } while (cursor != "0");
    return keys;
}

class RedisLayoutTest : public rt::RedisTest {
protected:
    // Keys that match no documented pattern, and every key seen.
    void check_keys(std::set<std::string>& seen) {
        for (const std::string& key : scan_all(conn)) {
            seen.insert(key);
            bool matched = false;
            for (const auto& p : patterns)
                if (std::regex_match(key, p)) {
                    matched = true;
                    break;
                }
            EXPECT_TRUE(matched) << "key `" << key << "` (type "
                                 << conn.command("TYPE", key).as_string()
                                 << ") is not listed in docs/redis-layout.md";
        }
    }

    std::vector<std::regex> patterns;
};

}  // namespace

TEST(RedisLayoutDoc, PatternsTranslateAsDocumented) {
    EXPECT_EQ(to_regex("retools:stat:[processed\\|failed]:<YYYY-MM-DD>"), "retools:stat:(processed|failed):[^:]+");
    EXPECT_EQ(to_regex("retools:heartbeat:<id>"), "retools:heartbeat:.+");
    EXPECT_EQ(to_regex("<key>:fence"), "(layout-lock|layout-limiter):fence");
    EXPECT_TRUE(std::regex_match("retools:lock:r:n:k", std::regex(to_regex("retools:lock:<region>:<ns>:<key>"))));
    EXPECT_FALSE(std::regex_match("retools:lock:r:n:k:x", std::regex(to_regex("retools:lock:<region>:<ns>:<key>"))));
}

TEST_F(RedisLayoutTest, EveryKeyAWorkloadWritesIsListedInTheDocument) {
    const auto doc_keys = documented_keys();
    ASSERT_GE(doc_keys.size(), 25u) << "the document's key tables were not found";
    for (const auto& k : doc_keys) patterns.emplace_back(to_regex(k));

    // Cache, with statistics: a miss, then a hit.
    retools::CacheRegion::statistics = true;
    retools::CacheRegion::add_region("layout", {.expires = 60s});
    auto twice = retools::cache_region("layout", "layout.ns", [](int x) {
                     return x * 2;
                 }).with_tags([](int x) { return std::vector<std::string>{"layout-" + std::to_string(x)}; });
    EXPECT_EQ(twice(21), 42);
    EXPECT_EQ(twice(21), 42);
    // The tag's set (a tag without `:`, so that only its own row matches it).
    ASSERT_EQ(conn.command("EXISTS", "retools:tag:layout-21").as_integer(), 1);

    // A lock, contended so that the waiter marks itself and the release signals.
    {
        retools::Lock held{lock_name, {.expires = 10s, .connection = conn}};
        std::thread waiter([&] {
            retools::Lock second{lock_name, {.expires = 10s, .connection = conn}, std::defer_lock};
            if (second.try_lock_for(3s)) second.unlock();
        });
        ASSERT_TRUE(rt::wait_until([&] {
            return conn.command("EXISTS", std::string(lock_name) + ":waiting").as_integer() == 1;
        }));
        held.unlock();
        waiter.join();
    }

    // A limiter.
    retools::Limiter limiter{{.limit = 2, .prefix = limiter_prefix, .expiration = 10s, .connection = conn}};
    ASSERT_TRUE(limiter.acquire_limit("op-1"));

    // Jobs: one that succeeds with a result, one that fails, one scheduled for later.
    retools::QueueManager qm{conn};
    qm.enqueue("layout.jobs:ok", {{"x", 1}}, {.metadata = {{"result_ttl", 60}}});
    qm.enqueue("layout.jobs:boom", {{"x", 2}});
    qm.enqueue_in(1h, "layout.jobs:ok", {{"x", 3}});
    // A unique job on a queue no worker serves (its claim stays), and a periodic job.
    qm.enqueue("layout.jobs:ok", {{"x", 5}}, {.queue_name = "held", .unique_for = 1min});
    qm.schedule_periodic("layout-daily", "@daily", "layout.jobs:ok", {{"x", 6}});
    // A dead worker's processing list (no heartbeat): recovery counts its death.
    conn.command("RPUSH", "retools:processing:ghost~1:main",
                 "main\n" + retools::detail::make_payload(qm, "0123456789abcdef0123456789abcdef", "layout.jobs:ok", {{"x", 4}}));
    retools::Worker::requeue_orphans(conn);

    retools::Worker w{{"main"},
                      {.connection = conn,
                       .handle_signals = false,
                       .log = retools::WorkerLog::none,
                       .heartbeat_interval = 100ms,
                       .heartbeat_timeout = 2s}};
    w.register_job("layout.jobs:ok", [](const json& kw) -> json { return kw.at("x"); });
    w.register_job("layout.jobs:boom", [](const json&) -> json { throw std::runtime_error("boom"); });
    std::thread worker([&] { w.work({.interval = 20ms}); });
    const bool ran = rt::wait_until([&] {
        return conn.command("LLEN", "retools:failed").as_integer() == 1 &&
               conn.command("LLEN", "retools:queue:main").as_integer() == 0 &&
               !scan_all(conn).empty() && conn.command("ZCARD", "retools:heartbeats").as_integer() >= 1;
    });
    std::set<std::string> seen;
    check_keys(seen);  // while the worker is registered and beating
    w.stop();
    worker.join();
    ASSERT_TRUE(ran) << "the workload did not finish";
    check_keys(seen);  // after it unregistered

    // The workload reached every component: the check above was not vacuous.
    auto seen_matching = [&](const std::string& re) {
        std::regex r(re);
        for (const auto& k : seen)
            if (std::regex_match(k, r)) return true;
        return false;
    };
    for (const char* re : {"retools:layout:layout\\.ns:21", "retools:lock:layout:layout\\.ns:21:fence",
                           "retools:hits:.*", "retools:misses:.*", "retools:regions", "layout-lock:fence",
                           "layout-limiter", "retools:queues", "retools:delayed", "retools:failed",
                           "retools:result:.+", "retools:heartbeat:.+", "retools:heartbeats", "retools:workers",
                           "retools:stat:processed", "retools:stat:failed:.+T.+", "retools:worker:.+:threads"})
        EXPECT_TRUE(seen_matching(re)) << "no key matching " << re << " was written";
    for (const char* re :
         {"retools:unique:held:layout\\.jobs:ok .+", "retools:periodic", "retools:periodic:due"})
        EXPECT_TRUE(seen_matching(re)) << "no key matching " << re << " was written";
}
