#pragma once
// hiredis' RESP reader with a bound on what one reply may make it allocate.
// An array is allocated in full when its header arrives, before any element:
// a lying or broken server's "*2000000000" would reserve 16 GB. Every array
// of a reply counts against one budget; a reply over it is a protocol error.

#include <string>

struct redisReader;

namespace retools::detail {

/// Array elements, over every array of one reply, that a reply may declare
/// (64 Mi: 512 MiB of element pointers, far above any reply retools reads).
inline constexpr long long kMaxReplyElements = 1LL << 26;

/// A reader whose arrays count against kMaxReplyElements. Throws
/// std::bad_alloc when hiredis cannot make one; free with free_reply_reader.
redisReader* create_reply_reader();
void free_reply_reader(redisReader* reader) noexcept;
/// redisReaderGetReply; a complete reply starts the next one's budget afresh.
int next_reply(redisReader* reader, void** reply);
/// What went wrong after next_reply failed, for an error message.
std::string reply_reader_error(const redisReader* reader);

}  // namespace retools::detail
