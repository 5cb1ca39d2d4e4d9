#pragma once
// TLS through OpenSSL: an SSL_CTX built from TlsOptions (shared by every
// connection of a pool) and one session per socket. The session's BIO writes
// with send(MSG_NOSIGNAL), so a peer that hung up never raises SIGPIPE.

#include <memory>
#include <string>
#include <string_view>

#include <retools/connection.hpp>

#include "client/transport.hpp"

struct ssl_ctx_st;
struct ssl_st;

namespace retools::detail {

class TlsContext {
public:
    /// Loads the CA, client certificate and key named by `options`; a file
    /// that cannot be read or a key that does not match throws
    /// ConfigurationError naming the file.
    explicit TlsContext(const TlsOptions& options);
    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    const TlsOptions& options() const noexcept { return options_; }
    ssl_ctx_st* get() const noexcept { return ctx_; }

private:
    TlsOptions options_;
    ssl_ctx_st* ctx_ = nullptr;
};

/// One TLS session over a connected non-blocking socket.
class TlsSession {
public:
    /// Runs the handshake before `deadline`, verifying the server as
    /// `host` (or TlsOptions::server_name). Throws ConnectionError saying
    /// why: certificate not trusted, expired, for another name, a server that
    /// does not speak TLS, or TimeoutError.
    TlsSession(const TlsContext& context, int fd, const std::string& host, const std::string& server,
               Deadline deadline, long long timeout_ms);
    ~TlsSession();
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    /// What SSL_read/SSL_write need next.
    enum class Want { nothing, read, write };

    /// Bytes read (> 0), or 0 with `want` set when the socket must become
    /// readable/writable first. End of stream and errors throw ConnectionError.
    std::size_t read(char* buffer, std::size_t capacity, Want& want);
    /// Bytes written (> 0), or 0 with `want` set.
    std::size_t write(std::string_view data, Want& want);
    /// Bytes already read from the socket, decrypted or not (no wait needed).
    bool pending() const;
    /// Non-blocking: false when the peer closed the session or sent data.
    bool idle_and_open();

private:
    [[noreturn]] void fail(int result, std::string_view during);

    ssl_st* ssl_ = nullptr;
    std::string server_;
    bool answered_ = false;  // application data has been received
    bool reading_alert_ = false;
};

}  // namespace retools::detail
