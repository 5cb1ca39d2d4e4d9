#pragma once
// The floor: one raw hiredis connection, no pool, no Reply wrapper. Each
// floor benchmark sends exactly the round trips its operation needs.

#include <hiredis/hiredis.h>

#include <array>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

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

    /// Buffers one command (nothing is sent until a reply is read).
    template <std::size_t N>
    void append(const std::array<std::string_view, N>& args) {
        std::array<const char*, N> argv;
        std::array<std::size_t, N> lens;
        for (std::size_t i = 0; i < N; ++i) {
            argv[i] = args[i].data();
            lens[i] = args[i].size();
        }
        if (redisAppendCommandArgv(c_, static_cast<int>(N), argv.data(), lens.data()) != REDIS_OK)
            throw std::runtime_error("raw hiredis: append failed");
    }
    template <class... S>
    void cmd(const S&... args) {
        append(std::array<std::string_view, sizeof...(S)>{std::string_view(args)...});
    }
    /// Buffers one command with a run-time number of arguments.
    void append(const std::vector<std::string_view>& args) {
        argv_.clear();
        lens_.clear();
        for (auto a : args) {
            argv_.push_back(a.data());
            lens_.push_back(a.size());
        }
        if (redisAppendCommandArgv(c_, static_cast<int>(args.size()), argv_.data(), lens_.data()) != REDIS_OK)
            throw std::runtime_error("raw hiredis: append failed");
    }

    /// Flushes and reads one reply; an error reply throws (the floor must do the real work).
    RawReply read() {
        void* raw = nullptr;
        if (redisGetReply(c_, &raw) != REDIS_OK) throw std::runtime_error(fmt::format("raw hiredis: {}", c_->errstr));
        RawReply reply(static_cast<redisReply*>(raw));
        if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error(fmt::format("raw hiredis: {}", reply->str));
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
    redisContext* c_ = nullptr;
    std::vector<const char*> argv_;
    std::vector<std::size_t> lens_;
};

}  // namespace bench
