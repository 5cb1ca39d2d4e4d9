#pragma once
// Link: one conversation with one server: a Transport for the bytes, hiredis'
// RESP reader for the replies, and the count of replies still owed. Requests
// go out in order and replies come back in order, so the queue of what is
// owed is all the state between them: a later multiplexer can let many
// threads append requests (each with its slot in that queue) while one reader
// hands replies back, without touching Transport.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/reply.hpp>

#include "client/transport.hpp"

struct redisReader;
struct redisReply;

namespace retools::detail {

class HealthGate;

class Link {
public:
    /// Connects to `options` (path, or host and port; TLS when `tls`) and runs
    /// the handshake: AUTH, SELECT, and over TLS a PING, so a refused client
    /// certificate shows here and not on the first command. Throws
    /// ConnectionError / TimeoutError / AuthenticationError / ConfigurationError.
    static std::unique_ptr<Link> open(const ConnectionOptions& options, const TlsContext* tls);

    explicit Link(std::unique_ptr<Transport> transport);
    ~Link();
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    /// Writes `parts` (RESP text of `replies` commands) as one request.
    void send(std::span<const std::string_view> parts, std::size_t replies, Deadline deadline,
              long long timeout_ms);
    /// The next reply owed, waiting until `deadline`.
    Reply receive(Deadline deadline, long long timeout_ms);
    /// The next `n` replies owed, appended to `out`. They share one owner, so
    /// a pipeline costs one allocation for its replies rather than one each
    /// (and any one of them kept keeps all of them).
    void receive_many(std::size_t n, Deadline deadline, long long timeout_ms, std::vector<Reply>& out);
    /// One command, one reply within `timeout` (0: no limit).
    Reply call(std::string_view resp, std::chrono::milliseconds timeout);

    /// Reusable: no reply owed and no failure seen (a stream cut mid-way
    /// cannot be resumed).
    bool reusable() const noexcept { return owed_ == 0 && !broken_ && in_pos_ == in_end_; }
    /// For a pooled idle link: false when the server closed it meanwhile.
    bool idle_and_open() { return transport_->idle_and_open(); }
    const std::string& server() const noexcept { return transport_->server(); }
    /// The socket, for poll() beside other descriptors (see buffered()).
    int fd() const noexcept { return transport_->fd(); }
    /// Bytes already received and not yet made into replies: the next
    /// receive() may not need the socket, whatever poll() says of it.
    bool buffered() const;

    /// When the link was last returned to a pool (kept only when max_idle is set).
    SteadyClock::time_point idle_since{};
    /// Sentinel mode: the master generation the link was opened under
    /// (SentinelMonitor::generation()); a link of an older one is not reused.
    std::uint64_t generation = 0;
    /// The pool's gate, told of timeouts and answers (set by the pool's
    /// Lease; null for links outside a pool).
    HealthGate* health = nullptr;

private:
    redisReply* receive_raw(Deadline deadline, long long timeout_ms);

    std::unique_ptr<Transport> transport_;
    redisReader* reader_ = nullptr;
    std::size_t owed_ = 0;  // replies requested and not yet read, oldest first
    bool broken_ = false;
    // Bytes read from the transport and not yet fed to reader_ (see receive()).
    static constexpr std::size_t feed_slice = 1024;
    std::vector<char> in_;
    std::size_t in_pos_ = 0, in_end_ = 0;
};

}  // namespace retools::detail
