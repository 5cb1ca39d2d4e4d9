// TLS: every component over a TLS redis-server (certificates made with the
// openssl command at start-up), mutual TLS, and each refusal as a
// ConnectionError that names its cause within the connect timeout.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/lock.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>
#include <retools/worker.hpp>

#include "expect.hpp"
#include "process.hpp"
#include "redis_server.hpp"
#include "tls_server.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::ConnectionOptions;
using retools::TlsOptions;
namespace rt = retools::test;

namespace {

constexpr auto kConnectTimeout = 1000ms;

// The message of the ConnectionError that `options` gives on first use, and
// checks that it came within the connect timeout (plus scheduling slack).
std::string refusal(ConnectionOptions options) {
    options.connect_timeout = kConnectTimeout;
    options.command_timeout = 2000ms;
    auto start = std::chrono::steady_clock::now();
    std::string what = "no error";
    try {
        Connection(options).command("PING");
    } catch (const retools::ConnectionError& e) {
        what = e.what();
    }
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_LT(took, kConnectTimeout + 700ms) << what;
    return what;
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

}  // namespace

TEST(Tls, RoundTripsPipelinesTransactionsAndScripts) {
    rt::TlsServer server;
    Connection conn{server.url()};
    EXPECT_EQ(conn.command("PING").view(), "PONG");
    using namespace std::string_literals;
    const std::string binary = "a\0b\r\n\xff"s;
    conn.command("SET", "k", binary);
    EXPECT_EQ(conn.command("GET", "k").as_string(), binary);
    // Larger than one TLS record and one socket read, both ways.
    std::string big(3 << 20, 'x');
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
    conn.command("SET", "big", big);
    EXPECT_EQ(conn.command("GET", "big").as_string(), big);

    retools::Pipeline p;
    for (int i = 0; i < 500; ++i) p.command("INCR", "n");
    auto replies = conn.execute(p);
    ASSERT_EQ(replies.size(), 500u);
    EXPECT_EQ(replies.back().as_integer(), 500);
    retools::Pipeline t;
    t.command("SET", "a", "1").command("INCR", "a");
    auto tx = conn.transaction(t);
    ASSERT_EQ(tx.size(), 2u);
    EXPECT_EQ(tx[1].as_integer(), 2);

    // KEYS[1]: the counter; ARGV[1]: the increment.
    static const retools::Script incr{R"lua(return redis.call('INCRBY', KEYS[1], ARGV[1]))lua"};
    EXPECT_EQ(incr(conn, {"s"}, 5).as_integer(), 5);
    conn.command("SCRIPT", "FLUSH");
    EXPECT_EQ(incr(conn, {"s"}, 5).as_integer(), 10);  // reloaded on NOSCRIPT

    EXPECT_EQ(conn.blocking_command(200ms, "BLPOP", "nothing", 0.1).is_nil(), true);
    conn.command("RPUSH", "list", "x");
    EXPECT_THROW_MSG(conn.command("GET", "list"), retools::ReplyError, "GET list: WRONGTYPE");
}

TEST(Tls, ThreadsShareOnePoolAndForkedChildrenOpenTheirOwn) {
    rt::TlsServer server;
    auto options = server.options();
    options.pool_size = 4;
    Connection conn{options};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 200; ++i) conn.command("INCR", "shared");
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(conn.command("GET", "shared").as_string(), "1600");
    EXPECT_LE(conn.open_connections(), 4u);
    auto child = rt::ChildProcess::fork([&] {
        for (int i = 0; i < 20; ++i) conn.command("INCR", "child");
        return 0;
    });
    EXPECT_EQ(child.exit_code(), 0);
    EXPECT_EQ(conn.command("GET", "child").as_string(), "20");
}

TEST(Tls, WorkerDrainsJobs) {
    rt::TlsServer server;
    Connection conn{server.url()};
    retools::QueueManager qm{conn};
    for (int i = 0; i < 50; ++i) qm.enqueue("tests.tls:record", {{"i", i}});
    retools::Worker w{{"main"},
                      {.connection = conn, .handle_signals = false, .log = retools::WorkerLog::none}};
    w.register_job("tests.tls:record", [conn](const nlohmann::json& kw) -> nlohmann::json {
        conn.command("SADD", "done", kw.at("i").get<int>());
        return nullptr;
    });
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 50u);
    EXPECT_EQ(conn.command("SCARD", "done").as_integer(), 50);
    EXPECT_EQ(conn.command("LLEN", "retools:queue:main").as_integer(), 0);
}

TEST(Tls, CacheAndLock) {
    rt::TlsServer server;
    Connection conn{server.url()};
    retools::CacheRegion::enabled = true;
    retools::CacheRegion::add_region("tls_region",
                                     {.expires = 60s, .first_value_wait = 5s, .connection = conn});
    std::atomic<int> calls{0};
    auto square = retools::cache_region("tls_region", "tls.square", [&](int x) {
        ++calls;
        return x * x;
    });
    EXPECT_EQ(square(7), 49);
    EXPECT_EQ(square(7), 49);
    EXPECT_EQ(calls.load(), 1);

    {
        retools::Lock lock{"tls-lock", {.expires = 5s, .timeout = 1s, .connection = conn}};
        EXPECT_EQ(conn.command("EXISTS", "tls-lock").as_integer(), 1);
        EXPECT_THROW((retools::Lock{"tls-lock", {.expires = 5s, .timeout = 100ms, .connection = conn}}),
                     retools::LockTimeout);
    }
    EXPECT_EQ(conn.command("EXISTS", "tls-lock").as_integer(), 0);
}

TEST(Tls, NameVerificationByHostNameAndServerName) {
    rt::TlsServer server;
    auto options = server.options();
    options.host = "localhost";  // the certificate's DNS name
    EXPECT_EQ(Connection(options).command("PING").view(), "PONG");
    options.host = "127.0.0.1";
    options.tls->server_name = "localhost";  // SNI and verification by name, connected by address
    EXPECT_EQ(Connection(options).command("PING").view(), "PONG");
}

TEST(Tls, MutualTls) {
    rt::TlsServer server{{.auth_clients = true}};
    EXPECT_EQ(Connection(server.url()).command("PING").view(), "PONG");

    auto without = server.options();
    without.tls->cert_file.clear();
    without.tls->key_file.clear();
    std::string what = refusal(without);
    EXPECT_CONTAINS(what, "client certificate");
    EXPECT_CONTAINS(what, std::to_string(server.port()));

    auto untrusted = server.options();
    untrusted.tls->cert_file = server.certificates().other_client_cert;
    untrusted.tls->key_file = server.certificates().other_client_key;
    EXPECT_CONTAINS(refusal(untrusted), "client");
}

TEST(Tls, WrongCaIsAClearConnectionError) {
    rt::TlsServer server;
    auto options = server.options();
    options.tls->ca_file = server.certificates().other_ca_cert;
    std::string what = refusal(options);
    EXPECT_CONTAINS(what, "wrong CA");
    EXPECT_CONTAINS(what, "certificate verification failed");
}

TEST(Tls, ExpiredCertificateIsAClearConnectionError) {
    rt::TlsServer server{{.expired_certificate = true}};
    EXPECT_CONTAINS(refusal(server.options()), "expired");
    // verify = false: encrypted, not authenticated, and it works.
    auto unverified = server.options();
    unverified.tls->verify = false;
    EXPECT_EQ(Connection(unverified).command("PING").view(), "PONG");
    EXPECT_EQ(Connection(server.url() + "&verify=no").command("PING").view(), "PONG");
}

TEST(Tls, WrongServerNameIsAClearConnectionError) {
    rt::TlsServer server;
    auto options = server.options();
    options.tls->server_name = "redis.wrong.example";
    std::string what = refusal(options);
    EXPECT_CONTAINS(what, "wrong server name");
    EXPECT_CONTAINS(what, "redis.wrong.example");
}

TEST(Tls, TlsUrlOnAPlainServerIsAClearConnectionError) {
    rt::RedisServer plain;
    auto options = plain.options();
    options.tls = TlsOptions{.ca_file = rt::test_certificates().ca_cert};
    std::string what = refusal(options);
    EXPECT_CONTAINS(what, "plain-text");
    EXPECT_CONTAINS(what, "TLS");
}

TEST(Tls, PlainUrlOnATlsServerIsAClearConnectionError) {
    rt::TlsServer server;
    std::string what = refusal(ConnectionOptions{.port = server.port()});
    EXPECT_CONTAINS(what, "TLS");
    EXPECT_CONTAINS(what, "rediss://");
}

TEST(Tls, IdleConnectionsClosedByARestartAreReplaced) {
    rt::TlsServer server;
    auto options = server.options();
    options.pool_size = 8;
    options.multiplex = false;  // the pool's own sockets are what is tested
    Connection conn{options};
    std::vector<std::thread> warm;
    for (int t = 0; t < 8; ++t) warm.emplace_back([&] { conn.command("DEBUG", "SLEEP", 0.05); });
    for (auto& t : warm) t.join();
    EXPECT_EQ(conn.open_connections(), 8u);
    server.stop();
    server.start();
    int failures = 0;
    for (int i = 0; i < 8; ++i) {
        try {
            conn.command("PING");
        } catch (const retools::ConnectionError&) {
            ++failures;
        }
    }
    EXPECT_LE(failures, 1);
}

TEST(Tls, WritingToAClosedConnectionIsAConnectionErrorNotSigpipe) {
    rt::TlsServer server;
    Connection conn{server.options()};
    conn.command("PING");
    // The server closes the socket after QUIT while megabytes are still being written.
    retools::Pipeline p;
    p.command("QUIT").command("SET", "big", std::string(32 << 20, 'x'));
    EXPECT_THROW(conn.execute(p), retools::ConnectionError);
    EXPECT_EQ(conn.command("PING").view(), "PONG");
}
