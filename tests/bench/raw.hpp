#pragma once
// The floor: one raw hiredis connection, no pool, no Reply wrapper. Each
// floor benchmark sends exactly the round trips its operation needs.

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

#include "harness.hpp"

namespace bench {

struct ReplyDeleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RawReply = std::unique_ptr<redisReply, ReplyDeleter>;

class RawConnection {
public:
    explicit RawConnection(const Env& env) {
        c_ = redisConnect(env.host.c_str(), env.port);
        if (!c_ || c_->err) throw std::runtime_error("raw hiredis: cannot connect");
    }
    ~RawConnection() { redisFree(c_); }
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
        if (!pending_.empty()) {
            if (redisAppendFormattedCommand(c_, pending_.data(), pending_.size()) != REDIS_OK)
                throw std::runtime_error("raw hiredis: append failed");
            pending_.clear();
        }
        void* raw = nullptr;
        if (redisGetReply(c_, &raw) != REDIS_OK)
            throw std::runtime_error(fmt::format("raw hiredis: {}", c_->errstr));
        RawReply reply(static_cast<redisReply*>(raw));
        if (reply->type == REDIS_REPLY_ERROR)
            throw std::runtime_error(fmt::format("raw hiredis: {}", reply->str));
        return reply;
    }
    /// Reads `n` replies and returns the last.
    RawReply read(std::size_t n) {
        RawReply last;
        for (std::size_t i = 0; i < n; ++i) last = read();
        return last;
    }

    redisContext* get() const noexcept { return c_; }

private:
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
