#include "client/link.hpp"

#include <algorithm>
#include <new>

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <retools/detail/command_buffer.hpp>
#include <retools/errors.hpp>

#include "client/errors.hpp"
#include "client/health.hpp"
#include "client/reply_access.hpp"
#include "client/reply_reader.hpp"

namespace retools::detail {
namespace {

// Sends a handshake command on a fresh link; a server error becomes the step's failure.
void handshake(Link& link, const ConnectionOptions& options, std::string_view step, bool authentication,
               const CommandBuffer& buffer) {
    Reply reply = link.call(buffer.data(), options.command_timeout);
    if (reply.is_error()) throw_handshake_error(link.server(), step, authentication, reply);
}

}  // namespace

std::unique_ptr<Link> Link::open(const ConnectionOptions& options, const TlsContext* tls) {
    auto link = std::make_unique<Link>(Transport::open(options, tls, options.describe()));
    if (!options.password.empty()) {
        CommandBuffer auth;
        if (options.user.empty()) {
            auth.add("AUTH", options.password);
            handshake(*link, options, "AUTH", true, auth);
        } else {
            auth.add("AUTH", options.user, options.password);
            handshake(*link, options, fmt::format("AUTH as user {:?}", options.user), true, auth);
        }
    }
    if (options.db != 0) {
        CommandBuffer select;
        select.add("SELECT", options.db);
        handshake(*link, options, fmt::format("SELECT {}", options.db), false, select);
    }
    if (tls != nullptr && options.password.empty() && options.db == 0) {
        // TLS 1.3 servers check the client certificate after the client's
        // handshake ends: a round trip makes a refusal show now. Its reply (an
        // error such as NOAUTH included) does not matter.
        link->call("*1\r\n$4\r\nPING\r\n", options.command_timeout);
    }
    return link;
}

Link::Link(std::unique_ptr<Transport> transport)
    : transport_(std::move(transport)), reader_(create_reply_reader()) {}

Link::~Link() {
    free_reply_reader(reader_);
}

void Link::send(std::span<const std::string_view> parts, std::size_t replies, Deadline deadline,
                long long timeout_ms) {
    try {
        transport_->write(parts, deadline, timeout_ms);
    } catch (const TimeoutError& e) {
        broken_ = true;
        if (health != nullptr) health->failed(e.what(), false);
        throw;
    } catch (...) {
        broken_ = true;
        throw;
    }
    owed_ += replies;
}

bool Link::buffered() const {
    return in_pos_ < in_end_ || reader_->pos < reader_->len || transport_->buffered();
}

Reply Link::receive(Deadline deadline, long long timeout_ms) {
    return ReplyAccess::adopt(receive_raw(deadline, timeout_ms));
}

void Link::receive_many(std::size_t n, Deadline deadline, long long timeout_ms, std::vector<Reply>& out) {
    if (n <= 4) {  // a shared owner saves nothing for a few replies
        out.reserve(out.size() + n);
        for (std::size_t i = 0; i < n; ++i) out.push_back(receive(deadline, timeout_ms));
        return;
    }
    struct Batch {
        std::vector<redisReply*> roots;
        Batch() = default;
        Batch(const Batch&) = delete;
        Batch& operator=(const Batch&) = delete;
        ~Batch() {
            for (redisReply* r : roots) freeReplyObject(r);
        }
    };
    auto batch = std::make_shared<Batch>();
    batch->roots.reserve(n);
    for (std::size_t i = 0; i < n; ++i) batch->roots.push_back(receive_raw(deadline, timeout_ms));
    out.reserve(out.size() + n);
    for (redisReply* r : batch->roots) out.push_back(ReplyAccess::adopt_shared(batch, r));
}

redisReply* Link::receive_raw(Deadline deadline, long long timeout_ms) {
    try {
        for (;;) {
            void* raw = nullptr;
            if (next_reply(reader_, &raw) != REDIS_OK)
                throw_connection_error(
                    server(), "reading a reply",
                    fmt::format("protocol error: {}{}", reply_reader_error(reader_),
                                transport_->is_tls() ? ""
                                                     : " (if the server speaks TLS on this port, use "
                                                       "rediss:// or ConnectionOptions.tls)"));
            if (raw != nullptr) {
                --owed_;
                if (health != nullptr) health->succeeded();
                return static_cast<redisReply*>(raw);
            }
            if (in_pos_ == in_end_) {
                if (in_.empty()) in_.resize(16 * 1024);
                in_end_ = transport_->read(in_.data(), in_.size(), deadline, timeout_ms);
                in_pos_ = 0;
            }
            // hiredis moves its unread bytes to the front after each reply
            // once 1 KiB is consumed: fed a 16 KiB read at once, a pipeline of
            // small replies is copied over and over (quadratic). Fed 1 KiB at
            // a time it copies each byte about once; a reply larger than that
            // (its bytes waiting unparsed in the reader) takes the rest whole.
            const std::size_t unparsed = reader_->len - reader_->pos;
            const std::size_t n =
                unparsed > feed_slice ? in_end_ - in_pos_ : std::min(in_end_ - in_pos_, feed_slice);
            if (redisReaderFeed(reader_, in_.data() + in_pos_, n) != REDIS_OK) throw std::bad_alloc();
            in_pos_ += n;
        }
    } catch (const TimeoutError& e) {
        broken_ = true;
        if (health != nullptr) health->failed(e.what(), false);
        throw;
    } catch (...) {
        broken_ = true;
        throw;
    }
}

Reply Link::call(std::string_view resp, std::chrono::milliseconds timeout) {
    Deadline deadline = deadline_after(timeout);
    send({&resp, 1}, 1, deadline, timeout.count());
    return receive(deadline, timeout.count());
}

}  // namespace retools::detail
