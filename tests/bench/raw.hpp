#pragma once
// The floor: one raw hiredis connection, no pool, no Reply wrapper. Each
// floor benchmark sends exactly the round trips its operation needs. Over TLS
// (hiredis 0.14 has none) the floor is a blocking OpenSSL session on one
// socket feeding hiredis' reply reader: the least any TLS client must do.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstddef>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include "harness.hpp"

namespace bench {

struct ReplyDeleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RawReply = std::unique_ptr<redisReply, ReplyDeleter>;

/// Plain TCP through hiredis, or TLS to the server's TLS port.
enum class Transport { plain, tls };

class RawConnection {
public:
    explicit RawConnection(const Env& env, Transport transport = Transport::plain) {
        if (transport == Transport::tls) {
            open_tls(env);
            return;
        }
        c_ = redisConnect(env.host.c_str(), env.port);
        if (!c_ || c_->err) throw std::runtime_error("raw hiredis: cannot connect");
    }
    ~RawConnection() {
        if (c_ != nullptr) redisFree(c_);
        if (ssl_ != nullptr) SSL_free(ssl_);
        if (ctx_ != nullptr) SSL_CTX_free(ctx_);
        if (reader_ != nullptr) redisReaderFree(reader_);
        if (fd_ >= 0) ::close(fd_);
    }
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;

    /// Buffers one command (nothing is sent until a reply is read). The RESP
    /// text is written straight into one buffer, handed to hiredis in one
    /// piece: the cheapest way to use hiredis, so the floor is a true floor.
    template <class... S>
    void cmd(const S&... args) {
        header('*', sizeof...(S));
        (bulk(std::string_view(args)), ...);
    }
    /// Buffers one command with a run-time number of arguments.
    void append(const std::vector<std::string_view>& args) {
        header('*', args.size());
        for (auto a : args) bulk(a);
    }

    /// Flushes and reads one reply; an error reply throws (the floor must do the real work).
    RawReply read() {
        if (ssl_ != nullptr) return check(read_tls());
        if (!pending_.empty()) {
            if (redisAppendFormattedCommand(c_, pending_.data(), pending_.size()) != REDIS_OK)
                throw std::runtime_error("raw hiredis: append failed");
            pending_.clear();
        }
        void* raw = nullptr;
        if (redisGetReply(c_, &raw) != REDIS_OK)
            throw std::runtime_error(fmt::format("raw hiredis: {}", c_->errstr));
        return check(RawReply(static_cast<redisReply*>(raw)));
    }
    /// Reads `n` replies and returns the last.
    RawReply read(std::size_t n) {
        RawReply last;
        for (std::size_t i = 0; i < n; ++i) last = read();
        return last;
    }

private:
    static RawReply check(RawReply reply) {
        if (reply->type == REDIS_REPLY_ERROR)
            throw std::runtime_error(fmt::format("raw hiredis: {}", reply->str));
        return reply;
    }

    void open_tls(const Env& env) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<std::uint16_t>(env.tls_port));
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd_ < 0 || ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
            throw std::runtime_error("raw TLS: cannot connect");
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ctx_ = SSL_CTX_new(TLS_client_method());
        if (ctx_ == nullptr || SSL_CTX_load_verify_locations(ctx_, env.tls_ca.c_str(), nullptr) != 1)
            throw std::runtime_error("raw TLS: cannot load the CA");
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
        ssl_ = SSL_new(ctx_);
        SSL_set_fd(ssl_, fd_);
        if (SSL_connect(ssl_) != 1) throw std::runtime_error("raw TLS: handshake failed");
        reader_ = redisReaderCreate();
    }

    RawReply read_tls() {
        if (!pending_.empty()) {
            if (SSL_write(ssl_, pending_.data(), static_cast<int>(pending_.size())) <= 0)
                throw std::runtime_error("raw TLS: write failed");
            pending_.clear();
        }
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader_, &raw) != REDIS_OK)
                throw std::runtime_error("raw TLS: protocol error");
            if (raw != nullptr) return RawReply(static_cast<redisReply*>(raw));
            int n = SSL_read(ssl_, buffer_.data(), static_cast<int>(buffer_.size()));
            if (n <= 0) throw std::runtime_error("raw TLS: read failed");
            redisReaderFeed(reader_, buffer_.data(), static_cast<std::size_t>(n));
        }
    }

    void header(char kind, std::size_t n) {
        char buf[24];
        buf[0] = kind;
        auto res = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
        *res.ptr++ = '\r';
        *res.ptr++ = '\n';
        pending_.append(buf, static_cast<std::size_t>(res.ptr - buf));
    }
    void bulk(std::string_view s) {
        header('$', s.size());
        pending_.append(s);
        pending_.append("\r\n", 2);
    }

    redisContext* c_ = nullptr;
    std::string pending_;
    // TLS only.
    int fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    redisReader* reader_ = nullptr;
    std::array<char, 16 * 1024> buffer_{};
};

/// The job every queue and worker benchmark uses.
inline constexpr std::string_view kNoopJob = "bench.jobs:noop";

/// The payload the queue writes for a no-op job without kwargs. Its job_id is
/// a uuid4 in hex drawn from std::mt19937_64, as any implementation needs a
/// fresh random id per job.
inline void noop_payload(std::string& out) {
    thread_local std::mt19937_64 engine{std::random_device{}()};
    std::uint64_t hi = (engine() & ~0xF000ull) | 0x4000ull;                         // version 4
    std::uint64_t lo = (engine() & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // variant 10
    char id[33];
    fmt::format_to(id, "{:016x}{:016x}", hi, lo);
    out.assign(R"({"job_id": ")");
    out.append(id, 32);
    out.append(R"(", "job": ")");
    out.append(kNoopJob);
    out.append(R"(", "kwargs": {}, "events": {}, "metadata": {}, "state": {}})");
}

}  // namespace bench
