#pragma once
// Transport: one socket to one server (TCP over IPv4/IPv6, a Unix socket, or
// TLS over TCP) that the library reads and writes itself. Every wait is a
// poll() against a deadline, so nothing blocks past connect_timeout or
// command_timeout; writes never raise SIGPIPE (MSG_NOSIGNAL, also under TLS).
//
// A Transport only moves bytes. Requests and replies (RESP framing, the
// replies still owed) live one level up in client/link.hpp, so a later
// multiplexer can queue requests from many threads onto one Transport.

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <retools/connection.hpp>

namespace retools::detail {

using SteadyClock = std::chrono::steady_clock;

/// The latest moment an operation may finish; SteadyClock::time_point::max(): never.
using Deadline = SteadyClock::time_point;

/// Now + `timeout`, or no deadline for 0.
Deadline deadline_after(std::chrono::milliseconds timeout);

/// Waits until `fd` has one of `events` (POLLIN/POLLOUT; errors and hang-ups
/// count as ready); false when `deadline` passed first.
bool wait_for(int fd, short events, Deadline deadline);

class TlsContext;
class TlsSession;

class Transport {
public:
    /// Connects to `options` (path, or host and port) within
    /// options.connect_timeout, with a TLS handshake when `tls` is given.
    /// Throws ConnectionError (TimeoutError when the timeout elapsed) naming
    /// the server and the cause. `server` names the server in messages.
    static std::unique_ptr<Transport> open(const ConnectionOptions& options, const TlsContext* tls,
                                           std::string server);
    ~Transport();
    Transport(const Transport&) = delete;
    Transport& operator=(const Transport&) = delete;

    /// Writes every part, in order, before `deadline`. `timeout_ms` is quoted
    /// in a TimeoutError.
    void write(std::span<const std::string_view> parts, Deadline deadline, long long timeout_ms);

    /// Reads what is available (at least one byte) into `buffer`, waiting
    /// until `deadline`. End of stream is a ConnectionError.
    std::size_t read(char* buffer, std::size_t capacity, Deadline deadline, long long timeout_ms);

    /// For an idle connection: false when the peer closed it, reset it or sent
    /// bytes nobody asked for (never blocks).
    bool idle_and_open();

    bool is_tls() const noexcept { return tls_ != nullptr; }
    /// The socket, for poll() beside other descriptors.
    int fd() const noexcept { return fd_; }
    /// Bytes decrypted (TLS) and not yet read: readable whatever poll() says.
    bool buffered() const;
    const std::string& server() const noexcept { return server_; }

private:
    Transport(int fd, std::string server);

    int fd_ = -1;
    bool received_any_ = false;  // for the hint when a TLS port hangs up on plain text
    std::unique_ptr<TlsSession> tls_;
    std::string server_;
    std::string scratch_;  // TLS writes of several parts are joined here
};

}  // namespace retools::detail
