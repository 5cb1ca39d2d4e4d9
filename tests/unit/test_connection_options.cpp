// Connection options and URL parsing, and Python float text: no server needed.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>

#include "../support/expect.hpp"
#include "client/command_table.hpp"
#include "client/sentinel.hpp"

using retools::Connection;
using retools::ConnectionOptions;

TEST(ConnectionOptions, ParsesFullUrl) {
    auto o = ConnectionOptions::from_url("redis://alice:s3cret@example.com:6380/3");
    EXPECT_EQ(o.host, "example.com");
    EXPECT_EQ(o.port, 6380);
    EXPECT_EQ(o.user, "alice");
    EXPECT_EQ(o.password, "s3cret");
    EXPECT_EQ(o.db, 3);
    EXPECT_TRUE(o.path.empty());
}

TEST(ConnectionOptions, DefaultsAndPasswordOnly) {
    auto o = ConnectionOptions::from_url("redis://localhost");
    EXPECT_EQ(o.host, "localhost");
    EXPECT_EQ(o.port, 6379);
    EXPECT_EQ(o.db, 0);
    auto p = ConnectionOptions::from_url("redis://:pa%40ss@127.0.0.1:7000");
    EXPECT_EQ(p.user, "");
    EXPECT_EQ(p.password, "pa@ss");
    EXPECT_EQ(p.port, 7000);
}

TEST(ConnectionOptions, ParsesIpv6AndUnix) {
    auto o = ConnectionOptions::from_url("redis://[::1]:6390/2");
    EXPECT_EQ(o.host, "::1");
    EXPECT_EQ(o.port, 6390);
    EXPECT_EQ(o.db, 2);
    auto u = ConnectionOptions::from_url("unix:///run/redis/redis.sock?db=5");
    EXPECT_EQ(u.path, "/run/redis/redis.sock");
    EXPECT_EQ(u.db, 5);
}

TEST(ConnectionOptions, RejectsBadUrlsNamingThePart) {
    auto message_of = [](const char* url) -> std::string {
        try {
            ConnectionOptions::from_url(url);
        } catch (const retools::ConfigurationError& e) {
            return e.what();
        }
        return "no error";
    };
    EXPECT_NE(message_of("localhost:6379").find("scheme"), std::string::npos);
    EXPECT_NE(message_of("http://localhost").find("scheme"), std::string::npos);
    EXPECT_NE(message_of("redis://localhost:port").find("port"), std::string::npos);
    EXPECT_NE(message_of("redis://localhost:70000").find("port"), std::string::npos);
    EXPECT_NE(message_of("redis://localhost:").find("port"), std::string::npos);
    EXPECT_NE(message_of("redis://localhost/x").find("database"), std::string::npos);
    EXPECT_NE(message_of("redis://:pw@/0").find("host"), std::string::npos);
    EXPECT_NE(message_of("unix://relative.sock").find("absolute"), std::string::npos);
    EXPECT_NE(message_of("unix:///tmp/s.sock?dbx=1").find("dbx"), std::string::npos);
    // The password never appears in an error message.
    std::string m = message_of("redis://bob:hunter2@host:99999/0");
    EXPECT_NE(m.find("port"), std::string::npos);
    EXPECT_EQ(m.find("hunter2"), std::string::npos);
}

TEST(ConnectionOptions, RejectsInvalidOptions) {
    EXPECT_THROW(Connection(ConnectionOptions{.pool_size = 0}), retools::ConfigurationError);
    EXPECT_THROW(Connection(ConnectionOptions{.port = 0}), retools::ConfigurationError);
    EXPECT_THROW(Connection(ConnectionOptions{.db = -1}), retools::ConfigurationError);
}

TEST(ConnectionOptions, PasswordWithSlashAndQuestionMarkParses) {
    auto o = ConnectionOptions::from_url("redis://default:se/cr?et@host:6379/0");
    EXPECT_EQ(o.user, "default");
    EXPECT_EQ(o.password, "se/cr?et");
    EXPECT_EQ(o.host, "host");
    EXPECT_EQ(o.port, 6379);
    EXPECT_EQ(o.db, 0);
    // Base64 passwords hold '/', '+' and '='; the last '@' ends the user info.
    auto b = ConnectionOptions::from_url("rediss://:ab/c+d=@e@cache.example:6380/2?verify=no");
    EXPECT_EQ(b.password, "ab/c+d=@e");
    EXPECT_EQ(b.host, "cache.example");
    EXPECT_EQ(b.port, 6380);
    EXPECT_EQ(b.db, 2);
    ASSERT_TRUE(b.tls);
    EXPECT_FALSE(b.tls->verify);
}

namespace {
std::string url_error(std::string_view url) {
    try {
        ConnectionOptions::from_url(url);
    } catch (const retools::ConfigurationError& e) {
        return e.what();
    }
    return "no error";
}
}  // namespace

TEST(ConnectionOptions, UrlErrorsNeverQuoteTheUserInfo) {
    // Every bad part after the user info, with passwords that look like URL parts.
    const char* secrets[] = {"se/cr?et", "p:4ss", "99999", "x%zz", "[::1", "db=3&x"};
    for (const char* secret : secrets) {
        for (const char* tail : {"host:port/0", "host:70000", "host/x", "host:", "/0", "host?dbx=1", "[::1/0",
                                 "host?ca_file=/a"}) {
            std::string url = fmt::format("redis://alice:{}@{}", secret, tail);
            std::string m = url_error(url);
            EXPECT_NE(m, "no error") << url;
            EXPECT_EQ(m.find(secret), std::string::npos) << url << " -> " << m;
            EXPECT_EQ(m.find("alice"), std::string::npos) << url << " -> " << m;
        }
    }
    // A broken escape in the password is reported without quoting any of it.
    std::string m = url_error("redis://bob:hun%zzter2@host/0");
    EXPECT_NE(m.find("password"), std::string::npos) << m;
    EXPECT_EQ(m.find("hun"), std::string::npos) << m;
    EXPECT_EQ(m.find("ter2"), std::string::npos) << m;
}

TEST(ConnectionOptions, ParsesTlsUrls) {
    auto plain = ConnectionOptions::from_url("redis://localhost");
    EXPECT_FALSE(plain.tls);
    auto o = ConnectionOptions::from_url(
        "rediss://u:p@redis.example:6380/1?ca_file=/etc/ca.pem&ca_path=/etc/certs&cert_file=/c%40t.pem"
        "&key_file=/k.pem&server_name=redis.internal");
    ASSERT_TRUE(o.tls);
    EXPECT_EQ(o.host, "redis.example");
    EXPECT_EQ(o.port, 6380);
    EXPECT_EQ(o.db, 1);
    EXPECT_EQ(o.user, "u");
    EXPECT_EQ(o.password, "p");
    EXPECT_EQ(o.tls->ca_file, "/etc/ca.pem");
    EXPECT_EQ(o.tls->ca_path, "/etc/certs");
    EXPECT_EQ(o.tls->cert_file, "/c@t.pem");
    EXPECT_EQ(o.tls->key_file, "/k.pem");
    EXPECT_EQ(o.tls->server_name, "redis.internal");
    EXPECT_TRUE(o.tls->verify);
    auto d = ConnectionOptions::from_url("rediss://[::1]");
    ASSERT_TRUE(d.tls);
    EXPECT_EQ(d.host, "::1");
    EXPECT_EQ(d.port, 6379);
    EXPECT_TRUE(d.tls->ca_file.empty());
}

TEST(ConnectionOptions, RejectsBadTlsParameters) {
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis://h?ca_file=/ca.pem"), retools::ConfigurationError,
                     "rediss://");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("rediss://h?verify=maybe"), retools::ConfigurationError,
                     "verify");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("rediss://h?ca_file="), retools::ConfigurationError,
                     "ca_file");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("rediss://h?sni=x"), retools::ConfigurationError, "sni");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis://::1:6379"), retools::ConfigurationError,
                     "brackets");
}

TEST(ConnectionOptions, TlsOptionsAreCheckedWhenTheConnectionIsMade) {
    EXPECT_THROW_MSG(Connection(ConnectionOptions{.tls = retools::TlsOptions{.ca_file = "/no/such/ca.pem"}}),
                     retools::ConfigurationError, "/no/such/ca.pem");
    EXPECT_THROW_MSG(Connection(ConnectionOptions{.tls = retools::TlsOptions{.ca_path = "/no/such/dir"}}),
                     retools::ConfigurationError, "ca_path");
    EXPECT_THROW_MSG(Connection(ConnectionOptions{.tls = retools::TlsOptions{.cert_file = "/c.pem"}}),
                     retools::ConfigurationError, "together");
    EXPECT_THROW_MSG(Connection(ConnectionOptions{.path = "/tmp/redis.sock", .tls = retools::TlsOptions{}}),
                     retools::ConfigurationError, "Unix socket");
    EXPECT_THROW_MSG(Connection(ConnectionOptions{.max_idle = std::chrono::milliseconds(-1)}),
                     retools::ConfigurationError, "max_idle");
}

TEST(Endpoint, ComparesByHostAndPort) {
    EXPECT_EQ((retools::Endpoint{"a", 1}), (retools::Endpoint{"a", 1}));
    EXPECT_NE((retools::Endpoint{"a", 1}), (retools::Endpoint{"a", 2}));
}

TEST(PythonRepr, WritesFloatsLikePython) {
    using retools::detail::python_repr;
    EXPECT_EQ(python_repr(1.0), "1.0");
    EXPECT_EQ(python_repr(0.1), "0.1");
    EXPECT_EQ(python_repr(-0.0), "-0.0");
    EXPECT_EQ(python_repr(1e16), "1e+16");
    EXPECT_EQ(python_repr(1e15), "1000000000000000.0");
    EXPECT_EQ(python_repr(1e-5), "1e-05");
    EXPECT_EQ(python_repr(0.0001), "0.0001");
    EXPECT_EQ(python_repr(1732492345.123456), "1732492345.123456");
    EXPECT_EQ(python_repr(123456789012345680.0), "1.2345678901234568e+17");
    EXPECT_EQ(python_repr(1.0 / 0.0), "inf");
    EXPECT_EQ(python_repr(-1.0 / 0.0), "-inf");
    EXPECT_EQ(python_repr(0.0 / 0.0), "nan");
    EXPECT_EQ(python_repr(0.0), "0.0");
    EXPECT_EQ(python_repr(-1.5), "-1.5");
    EXPECT_EQ(python_repr(1.5e15), "1500000000000000.0");
    EXPECT_EQ(python_repr(9999999999999998.0), "9999999999999998.0");
    EXPECT_EQ(python_repr(0.00012), "0.00012");
    EXPECT_EQ(python_repr(1.2e-5), "1.2e-05");
    EXPECT_EQ(python_repr(5e-324), "5e-324");
    EXPECT_EQ(python_repr(1.7976931348623157e308), "1.7976931348623157e+308");
    EXPECT_EQ(python_repr(123.0), "123.0");
}

// fmt's shortest form follows Python's thresholds too: the two must agree on
// values of every magnitude (a reference the fast path is checked against).
TEST(PythonRepr, AgreesWithTheShortestRoundTripOfFmt) {
    using retools::detail::python_repr;
    std::mt19937_64 rng(12345);
    for (int i = 0; i < 200000; ++i) {
        std::uint64_t bits = rng();
        double v;
        std::memcpy(&v, &bits, sizeof v);
        if (i % 2 == 0) v = std::ldexp(static_cast<double>(bits >> 11), static_cast<int>(bits % 120) - 90);
        if (!std::isfinite(v)) continue;
        std::string ref = fmt::format("{}", v);
        if (ref.find_first_of(".e") == std::string::npos) ref += ".0";
        ASSERT_EQ(python_repr(v), ref) << bits;
    }
}

// ---- redis-sentinel:// ------------------------------------------------------------

namespace {
// The message of the ConfigurationError that parsing `url` throws ("" if none).
std::string sentinel_url_error(const std::string& url) {
    try {
        ConnectionOptions::from_url(url);
    } catch (const retools::ConfigurationError& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST(SentinelUrl, ParsesHostsMasterDbAndBothPasswords) {
    auto o = ConnectionOptions::from_url(
        "redis-sentinel://alice:data%40pw@10.0.0.1:26379,sentinel-b:26380,[::1]:26381/2"
        "?master=mymaster&sentinel_password=sent%26pw&sentinel_username=watcher");
    ASSERT_TRUE(o.sentinel.has_value());
    EXPECT_EQ(o.sentinel->master, "mymaster");
    ASSERT_EQ(o.sentinel->sentinels.size(), 3u);
    EXPECT_EQ(o.sentinel->sentinels[0], (retools::Endpoint{"10.0.0.1", 26379}));
    EXPECT_EQ(o.sentinel->sentinels[1], (retools::Endpoint{"sentinel-b", 26380}));
    EXPECT_EQ(o.sentinel->sentinels[2], (retools::Endpoint{"::1", 26381}));
    EXPECT_EQ(o.user, "alice");        // the data nodes'
    EXPECT_EQ(o.password, "data@pw");  // the data nodes'
    EXPECT_EQ(o.sentinel->password, "sent&pw");
    EXPECT_EQ(o.sentinel->username, "watcher");
    EXPECT_EQ(o.db, 2);
    EXPECT_FALSE(o.sentinel->tls.has_value());
    EXPECT_EQ(o.describe(),
              "master \"mymaster\" via sentinels 10.0.0.1:26379,sentinel-b:26380,[::1]:26381/2");
}

TEST(SentinelUrl, MinimalUrlAndAConnectionFromIt) {
    auto o = ConnectionOptions::from_url("redis-sentinel://127.0.0.1:26379?master=m");
    ASSERT_TRUE(o.sentinel.has_value());
    EXPECT_EQ(o.db, 0);
    EXPECT_TRUE(o.password.empty());
    EXPECT_TRUE(o.sentinel->password.empty());
    Connection conn{"redis-sentinel://127.0.0.1:26379/1?master=m"};  // connects lazily
    EXPECT_EQ(conn.options().sentinel->master, "m");
    EXPECT_EQ(conn.master_switches(), 0u);
}

TEST(SentinelUrl, MissingMasterIsNamed) {
    EXPECT_NE(sentinel_url_error("redis-sentinel://127.0.0.1:26379").find("missing master=NAME"),
              std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://127.0.0.1:26379/0?master=").find("missing master=NAME"),
              std::string::npos);
}

TEST(SentinelUrl, BadHostListsNameThePart) {
    auto has = [](const std::string& url, const std::string& part) {
        std::string what = sentinel_url_error(url);
        EXPECT_NE(what.find(part), std::string::npos) << url << " -> " << what;
    };
    has("redis-sentinel://?master=m", "no sentinels");
    has("redis-sentinel://10.0.0.1?master=m", "sentinel 1 of the list has no port");
    has("redis-sentinel://10.0.0.1:26379,,10.0.0.2:1?master=m", "sentinel 2 of the list is empty");
    has("redis-sentinel://10.0.0.1:abc?master=m", "the port of sentinel 1 of the list is not a number");
    has("redis-sentinel://h:1,:26379?master=m", "sentinel 2 of the list has no host");
    has("redis-sentinel://h:1,[::1?master=m", "sentinel 2 of the list has an unterminated '['");
    has("redis-sentinel://h:1/x?master=m", "the database is not a number");
    has("redis-sentinel://h:1?master=m&colour=red", "unknown query parameter \"colour\"");
}

TEST(SentinelUrl, ErrorsNeverQuoteAPassword) {
    // A password with '/', ':' and '?' (base64 and friends), and a bad host list after it.
    for (const char* url : {"redis-sentinel://default:se/cr:et?x@10.0.0.1?master=m",
                            "redis-sentinel://user:se/cr%zzet@10.0.0.1:1?master=m",
                            "redis-sentinel://:se/cr?et@h:1?master=m&sentinel_password=%zzse/cr?et",
                            "redis-sentinel://:se/cr?et@h:1"}) {
        std::string what = sentinel_url_error(url);
        EXPECT_FALSE(what.empty()) << url;
        EXPECT_EQ(what.find("se/cr"), std::string::npos) << what;
        EXPECT_EQ(what.find("cr?et"), std::string::npos) << what;
    }
    auto o = ConnectionOptions::from_url("redis-sentinel://:se/cr?et@h:1?master=m");
    EXPECT_EQ(o.password, "se/cr?et");
}

TEST(SentinelOptions, ValidatedWhenAConnectionIsMade) {
    using retools::SentinelOptions;
    EXPECT_THROW(Connection(ConnectionOptions{.sentinel = SentinelOptions{.sentinels = {{"h", 1}}}}),
                 retools::ConfigurationError);
    EXPECT_THROW(Connection(ConnectionOptions{.sentinel = SentinelOptions{.master = "m"}}),
                 retools::ConfigurationError);
    EXPECT_THROW(
        Connection(ConnectionOptions{.sentinel = SentinelOptions{.master = "m", .sentinels = {{"h", 0}}}}),
        retools::ConfigurationError);
    EXPECT_THROW(
        Connection(ConnectionOptions{.path = "/tmp/x.sock",
                                     .sentinel = SentinelOptions{.master = "m", .sentinels = {{"h", 1}}}}),
        retools::ConfigurationError);
}

// What the pool may send again after a failover (white box: client/command_table.hpp).
TEST(SentinelRetry, OnlyRequestsThatOnlyReadCountAsRepeatable) {
    auto read_only = [](auto... commands) {
        retools::detail::CommandBuffer buffer;
        (std::apply([&](const auto&... args) { buffer.add(args...); }, commands), ...);
        return retools::detail::read_only_request(buffer.data());
    };
    EXPECT_TRUE(read_only(std::tuple{"GET", "k"}));
    EXPECT_TRUE(
        read_only(std::tuple{"get", "k"}, std::tuple{"HGETALL", "h"}, std::tuple{"LRANGE", "q", 0, -1}));
    EXPECT_FALSE(read_only(std::tuple{"INCR", "k"}));
    EXPECT_FALSE(read_only(std::tuple{"GET", "k"}, std::tuple{"SET", "k", "v"}));
    EXPECT_FALSE(read_only(std::tuple{"EVALSHA", "0123", 0}));
    EXPECT_FALSE(retools::detail::read_only_request(""));
    EXPECT_FALSE(retools::detail::read_only_request("*1\r\n$3\r\nGE"));  // cut short
}
