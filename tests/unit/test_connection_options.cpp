// Connection options and URL parsing, and Python float text: no server needed.
#include <string>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>

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
    EXPECT_NE(sentinel_url_error("redis-sentinel://?master=m").find("no sentinels"), std::string::npos);
    EXPECT_NE(
        sentinel_url_error("redis-sentinel://10.0.0.1?master=m").find("sentinel \"10.0.0.1\" has no port"),
        std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://10.0.0.1:26379,,10.0.0.2:1?master=m").find("empty entry"),
              std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://10.0.0.1:abc?master=m")
                  .find("port of sentinel \"10.0.0.1:abc\""),
              std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://:26379?master=m").find("has no host"), std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://h:1/x?master=m").find("database \"x\""),
              std::string::npos);
    EXPECT_NE(sentinel_url_error("redis-sentinel://h:1?master=m&colour=red")
                  .find("unknown query parameter \"colour\""),
              std::string::npos);
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
