// Fuzz target: bytes from a server (or something pretending to be one) through
// hiredis' RESP reader into retools::Reply, and every accessor on the result.
// Only retools::Error may escape an accessor; the reader may refuse the input.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <retools/errors.hpp>
#include <retools/reply.hpp>

#include "client/reply_access.hpp"
#include "client/reply_reader.hpp"

namespace {

void walk(const retools::Reply& reply, int depth) {
    if (depth > 64) return;
    try {
        (void)reply.type();
        switch (reply.type()) {
            case retools::Reply::Type::integer: (void)reply.as_integer(); break;
            case retools::Reply::Type::string:
            case retools::Reply::Type::status:
                (void)reply.as_string();
                try {
                    (void)reply.as_double();
                } catch (const retools::Error&) {}
                break;
            case retools::Reply::Type::array:
                for (const auto& child : reply.as_array()) walk(child, depth + 1);
                break;
            case retools::Reply::Type::error: (void)reply.error_message(); break;
            case retools::Reply::Type::nil: break;
        }
        (void)reply.as_optional_string();
    } catch (const retools::Error&) {}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The reader the library uses: a reply may not declare more array
    // elements than kMaxReplyElements (hiredis allocates an array up front).
    redisReader* reader = retools::detail::create_reply_reader();
    // Feed in two pieces, as a socket would, to exercise partial replies.
    std::size_t half = size / 2;
    if (redisReaderFeed(reader, reinterpret_cast<const char*>(data), half) == REDIS_OK &&
        redisReaderFeed(reader, reinterpret_cast<const char*>(data) + half, size - half) == REDIS_OK) {
        for (int i = 0; i < 64; ++i) {
            void* raw = nullptr;
            if (retools::detail::next_reply(reader, &raw) != REDIS_OK || raw == nullptr) break;
            walk(retools::detail::ReplyAccess::adopt(static_cast<redisReply*>(raw)), 0);
        }
    }
    retools::detail::free_reply_reader(reader);
    return 0;
}
