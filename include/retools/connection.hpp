#pragma once
// Connection: a thread-safe, fork-safe pool of Redis connections.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <retools/detail/command_buffer.hpp>
#include <retools/reply.hpp>

namespace retools {

/// One server address: a host name or IP address (IPv6 without brackets) and a TCP port.
struct Endpoint {
    /// Host name or address.
    std::string host = "127.0.0.1";
    /// TCP port.
    int port = 6379;

    friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// TLS settings (`rediss://`). An aggregate: every field is optional. Without
/// `ca_file` and `ca_path` the system's trusted certificates are used.
///
/// ```cpp
/// retools::ConnectionOptions o{.host = "redis.example", .port = 6380,
///                              .tls = retools::TlsOptions{.ca_file = "/etc/redis/ca.pem"}};
/// ```
struct TlsOptions {
    /// PEM file of the certificate authorities to trust; empty: the system's.
    std::string ca_file;
    /// Directory of hashed CA certificates (`openssl rehash`); empty: none.
    std::string ca_path;
    /// PEM client certificate for mutual TLS; empty: none. Needs `key_file`.
    std::string cert_file;
    /// PEM private key of `cert_file`; empty: none.
    std::string key_file;
    /// Name sent as SNI and checked against the server's certificate; empty:
    /// the host connected to (an IP address is checked as an address).
    std::string server_name;
    /// Verify the server's certificate chain and name (default true). Turning
    /// it off makes the connection encrypted but not authenticated.
    bool verify = true;
};

/// Redis Sentinel: the data nodes are found through the sentinels (and found
/// again after a failover). The other ConnectionOptions fields (user,
/// password, db, tls, timeouts, pool) apply to the data nodes;
/// ConnectionOptions::host, port and path are ignored. See docs/sentinel.md.
///
/// ```cpp
/// retools::Connection conn{retools::ConnectionOptions{
///     .sentinel = retools::SentinelOptions{.master = "mymaster",
///                                          .sentinels = {{"10.0.0.1", 26379}, {"10.0.0.2", 26379}}}}};
/// ```
struct SentinelOptions {
    /// The master's name, as in the sentinels' `sentinel monitor <name> ...`. Required.
    std::string master;
    /// The sentinels, asked in this order; the first that answers names the
    /// master. At least one.
    std::vector<Endpoint> sentinels;
    /// ACL user name for the sentinels (`AUTH user password`); empty: the default user.
    std::string username;
    /// Password of the sentinels (`requirepass` in sentinel.conf); empty: no AUTH.
    std::string password;
    /// TLS to the sentinels; nullopt (the default): plain text. The data nodes
    /// use ConnectionOptions::tls.
    std::optional<TlsOptions> tls;
};

/// Redis Cluster: the slot map is read from any of the seeds (`CLUSTER
/// SLOTS`) and kept current inside the Connection (MOVED and ASK redirections
/// are followed, the map is read again after a connection failure and every
/// `refresh_interval`). The other ConnectionOptions fields (user, password,
/// tls, timeouts, pool_size per node) apply to every node; host, port and path
/// are ignored and db must be 0. Components switch to the cluster key layout
/// (docs/cluster.md).
///
/// ```cpp
/// retools::Connection conn{retools::ConnectionOptions{
///     .cluster = retools::ClusterOptions{.seeds = {{"10.0.0.1", 7000}, {"10.0.0.2", 7000}}}}};
/// ```
struct ClusterOptions {
    /// Nodes asked for the slot map, in this order (any node will do; the
    /// others are found from the map). At least one.
    std::vector<Endpoint> seeds;
    /// Send commands that only read (GET, HGETALL, LRANGE ...) to a replica of
    /// the slot's master when it has one (after `READONLY`); default false:
    /// every command goes to the master, so a read sees every earlier write.
    bool read_from_replicas = false;
    /// How often the slot map is read again even when nothing went wrong
    /// (default 10 s); 0: only after a redirection or a connection failure.
    std::chrono::milliseconds refresh_interval{10000};
};

/// Where and how to connect. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::Connection conn{retools::ConnectionOptions{.port = 6380, .pool_size = 4}};
/// ```
struct ConnectionOptions {
    /// Server host name or address. Ignored when `path` is set.
    std::string host = "127.0.0.1";
    /// Server TCP port.
    int port = 6379;
    /// Unix socket path; empty means TCP.
    std::string path;
    /// ACL user name for `AUTH user password`; empty means `AUTH password` (the default user).
    std::string user;
    /// Password; empty means no AUTH.
    std::string password;
    /// Database selected on connect (0 sends no SELECT).
    int db = 0;
    /// Time allowed to open a connection; 0 means the operating system's default.
    std::chrono::milliseconds connect_timeout{2000};
    /// Time allowed for one round trip; 0 means wait forever. Blocking
    /// commands (see Connection::blocking_command) get their block time on top.
    std::chrono::milliseconds command_timeout{5000};
    /// Most connections open at once besides the shared one (see
    /// `multiplex`); threads beyond it wait for a free one (at most
    /// command_timeout). Connections open lazily. Must be >= 1.
    std::size_t pool_size = 16;
    /// true (the default): concurrent callers share one connection per
    /// server; their commands are written together and the replies handed
    /// back in order, so 64 threads cost one socket, not 64. What may not
    /// share it (blocking commands such as BLPOP and WAIT, SUBSCRIBE, WATCH,
    /// SELECT, CLIENT, and requests of 1,000 commands or 1 MiB or more) goes
    /// on a pooled connection of its own. false: every call leases a pooled
    /// connection for its round trip. See docs/connection.md.
    bool multiplex = true;
    /// TLS for TCP connections (not for `path`); nullopt: plain text.
    std::optional<TlsOptions> tls;
    /// A pooled connection idle longer than this is closed instead of reused;
    /// 0 (the default) keeps idle connections open. Whatever this is, an idle
    /// connection the server closed is noticed and replaced before reuse.
    std::chrono::milliseconds max_idle{0};
    /// After a refused connection or a timed-out round trip the server counts
    /// as down: calls fail at once with ConnectionError (nothing sent,
    /// maybe_executed() false) for a backoff that starts at 100 ms and
    /// doubles up to this (default 2 s); then one call at a time probes the
    /// server with a PING, and its answer lets every call through again. A
    /// dead or hung server costs one timeout, not one per call. 0 turns this
    /// off: every call tries the server. See docs/connection.md.
    std::chrono::milliseconds reconnect_backoff_max{2000};
    /// Find the master through Redis Sentinel (then host, port and path are
    /// ignored); nullopt (the default): connect to host/port or path.
    std::optional<SentinelOptions> sentinel;
    /// Talk to a Redis Cluster (then host, port and path are ignored);
    /// nullopt (the default): a single server (or Sentinel).
    std::optional<ClusterOptions> cluster;

    /// Parses `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://...` (TLS; query parameters `ca_file`, `ca_path`, `cert_file`,
    /// `key_file`, `server_name`, `verify=no`), `unix:///path/to/sock[?db=N]` or
    /// `redis-sentinel://[user[:password]@]host:port[,host:port...][/db]?master=NAME`
    /// (the password is the data nodes'; `sentinel_password=` and
    /// `sentinel_username=` are the sentinels'; `@` and `&` in query values as %40 and %26), or
    /// `redis-cluster://[user[:password]@]host:port[,host:port...][?read_from_replicas=yes]`
    /// (the hosts are ClusterOptions::seeds; user and password apply to every node).
    /// Throws ConfigurationError naming the bad part; nothing of the user name
    /// or password is ever part of the message.
    static ConnectionOptions from_url(std::string_view url);

    /// The address for messages: `127.0.0.1:6379/0`, `unix:/path/sock/0` or
    /// `cluster via 10.0.0.1:7000,10.0.0.2:7000` (no credentials).
    std::string describe() const;
};

class Connection;

namespace detail {
struct ConnectionAccess;  // the library's own way in (src/client/connection_access.hpp)
/// Throws ReplyError for the error reply `reply` to command number `index` in
/// `buffer`, naming the command and the key(s) it acted on. Here because the
/// command templates below need it; defined with the other error translations.
[[noreturn]] void throw_command_error(const Reply& reply, const CommandBuffer& buffer, std::size_t index = 0);
/// Sends the one command encoded in `buffer` through `conn` and returns its
/// reply, an error reply included (the templates below decide whether to
/// throw). `key` routes it on a Redis Cluster (Connection::command_for_key);
/// `block` is added to the timeout (Connection::blocking_command). Here
/// because the command templates need it; defined in src/client/connection.cpp.
Reply send_command(const Connection& conn, const CommandBuffer& buffer,
                   std::optional<std::string_view> key = std::nullopt,
                   std::chrono::milliseconds block = std::chrono::milliseconds{0});
}  // namespace detail

/// Commands collected for one round trip.
///
/// ```cpp
/// retools::Pipeline p;
/// p.command("INCR", "a").command("GET", "b");
/// std::vector<retools::Reply> replies = conn.execute(p);     // or conn.transaction(p)
/// ```
class Pipeline {
public:
    /// Appends one command; arguments as for Connection::command().
    template <class... Args>
    Pipeline& command(const Args&... args) {
        buffer_.add(args...);
        return *this;
    }
    /// Number of commands collected.
    std::size_t size() const noexcept { return buffer_.commands(); }
    bool empty() const noexcept { return buffer_.empty(); }
    /// Forgets the commands, keeping the memory for reuse.
    void clear() noexcept { buffer_.clear(); }
    /// Reserves `bytes` of encoded commands.
    void reserve(std::size_t bytes) { buffer_.reserve(bytes); }

private:
    friend struct detail::ConnectionAccess;  // Connection sends the encoded commands
    detail::CommandBuffer buffer_;
};

/// The way to one Redis server: concurrent callers share one socket
/// (ConnectionOptions::multiplex), and what cannot share it (blocking and
/// connection-state commands, very large requests) gets a pooled one. Cheap
/// to copy: copies share the sockets. Every member is safe to call from many
/// threads at once. After
/// `fork()`, the child never touches the parent's sockets; it opens its own on
/// first use.
///
/// ```cpp
/// retools::Connection conn{"redis://127.0.0.1:6379/0"};
/// conn.command("SET", "greeting", "hello");
/// std::string v = conn.command("GET", "greeting").as_string();
/// ```
///
/// A connection that the server closed while it was idle (a restart,
/// `CLIENT KILL`, the server's `timeout`) is noticed and replaced before it is
/// used, so a restart costs at most the commands in flight.
///
/// Errors: `ConnectionError` (unreachable, hung up, a TLS failure;
/// `TimeoutError` when a timeout elapsed) — the broken connection is dropped
/// and the next call opens a fresh one; nothing is re-sent by retools (except
/// with Sentinel, below); `ReplyError` for a server error reply.
///
/// With ConnectionOptions::sentinel, a failover is followed inside the same
/// Connection: a call that fails because of it raises ConnectionError once,
/// and the next call goes to the new master. A call is sent again by the pool
/// only when that cannot run it twice: no byte of it had been sent, the server
/// refused it unexecuted (`READONLY`, `LOADING`, `MASTERDOWN`), or every
/// command of it only reads (GET, HGETALL, LRANGE, ...). See docs/sentinel.md.
///
/// With ConnectionOptions::cluster, each command goes to the master of its
/// key's hash slot (the first key of the commands retools knows; see
/// command_for_key() for others); keyless commands (PING, INFO ...) go to one
/// node. A pipeline whose commands live on several nodes is sent as one
/// request per node and its replies come back in the pipeline's order. A
/// command, transaction or script whose keys span hash slots throws
/// ConfigurationError naming the keys, before anything is sent. MOVED, ASK,
/// TRYAGAIN and CLUSTERDOWN are handled inside; a call is sent again after a
/// connection failure only under the Sentinel rules above. See docs/cluster.md.
class Connection {
public:
    /// `redis://127.0.0.1:6379/0`.
    Connection();
    explicit Connection(ConnectionOptions options);
    /// See ConnectionOptions::from_url.
    explicit Connection(std::string_view url);
    explicit Connection(const char* url) : Connection(std::string_view(url)) {}
    explicit Connection(const std::string& url) : Connection(std::string_view(url)) {}

    /// Sends one command and waits for its reply. Arguments are strings (binary
    /// safe), integers, floating point (shortest round-trip text) or ranges of those.
    /// A server error reply throws ReplyError, its message prefixed with the
    /// command and its key (e.g. `HGETALL some-key: WRONGTYPE ...`).
    template <class... Args>
    Reply command(const Args&... args) const {
        detail::CommandBuffer buffer;
        buffer.add(args...);
        Reply reply = detail::send_command(*this, buffer);
        if (reply.is_error()) detail::throw_command_error(reply, buffer);
        return reply;
    }

    /// Like command(), sent to the node that serves `key` on a Redis Cluster:
    /// for commands retools does not know the keys of (module commands, newer
    /// commands). Without a cluster it is exactly command().
    ///
    /// ```cpp
    /// conn.command_for_key("user:{42}", "JSON.GET", "user:{42}", "$.name");
    /// ```
    template <class... Args>
    Reply command_for_key(std::string_view key, const Args&... args) const {
        detail::CommandBuffer buffer;
        buffer.add(args...);
        Reply reply = detail::send_command(*this, buffer, key);
        if (reply.is_error()) detail::throw_command_error(reply, buffer);
        return reply;
    }

    /// Like command() for commands that block server-side (BLPOP, BLMOVE ...):
    /// the socket timeout is extended by `block` for this call.
    template <class... Args>
    Reply blocking_command(std::chrono::milliseconds block, const Args&... args) const {
        detail::CommandBuffer buffer;
        buffer.add(args...);
        Reply reply = detail::send_command(*this, buffer, std::nullopt, block);
        if (reply.is_error()) detail::throw_command_error(reply, buffer);
        return reply;
    }

    /// Sends every command of the pipeline in one round trip; one reply each, in
    /// order. Error replies do not throw here: they throw when read.
    std::vector<Reply> execute(const Pipeline& pipeline) const;

    /// The pipeline wrapped in MULTI/EXEC, still one round trip: the commands'
    /// replies, in order. A command rejected while queueing throws ReplyError
    /// and nothing runs.
    std::vector<Reply> transaction(const Pipeline& pipeline) const;

    /// The options this pool was made with (copies share them).
    const ConnectionOptions& options() const noexcept;

    /// True when this is a Redis Cluster connection (ConnectionOptions::cluster):
    /// components then use the cluster key layout (docs/cluster.md).
    bool is_cluster() const noexcept { return options().cluster.has_value(); }

    /// Round trips made through this pool since it was created (copies share
    /// the count): one per command(), execute() or transaction() call, one
    /// per node a Cluster pipeline reaches, one per redirection followed. For
    /// monitoring, and for tests and benchmarks that count round trips per
    /// operation:
    ///
    /// ```cpp
    /// auto before = conn.round_trips();
    /// conn.execute(pipeline);
    /// assert(conn.round_trips() - before == 1);
    /// ```
    std::uint64_t round_trips() const noexcept;

    /// False while calls fail fast because the server was found down (see
    /// ConnectionOptions::reconnect_backoff_max); on a Cluster, while any
    /// master does. True again once a probe is answered. For health checks:
    ///
    /// ```cpp
    /// if (!conn.healthy()) { /* serve without Redis for now */ }
    /// ```
    bool healthy() const;

    /// Connections this pool has open in this process (idle or in use; with a
    /// Cluster, over every node): never more than pool_size per server.
    std::size_t open_connections() const noexcept;

    /// With ConnectionOptions::sentinel: how often this process's pool saw the
    /// master move to another address (a failover); 0 otherwise.
    std::uint64_t master_switches() const noexcept;

    /// Closes idle connections; in-use ones close when returned.
    void reset() const;

private:
    friend struct detail::ConnectionAccess;
    struct Impl;  // the pool and transport, in src/client/connection_impl.hpp
    std::shared_ptr<Impl> impl_;
};

/// The process-wide default connection, used by every component that is not
/// given one: built on first use from the `REDIS_URL` environment variable,
/// else `redis://127.0.0.1:6379/0`. Assign to it at start-up, before other
/// threads use it:
///
/// ```cpp
/// retools::global_connection() = retools::Connection{"redis://cache:6379/2"};
/// ```
Connection& global_connection();

}  // namespace retools
