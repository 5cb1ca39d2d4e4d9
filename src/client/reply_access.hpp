#pragma once
// How the library makes Reply objects from hiredis replies: kept out of the
// public Reply, which only names a friend. Not installed.

#include <memory>

#include <retools/reply.hpp>

struct redisReply;

namespace retools::detail {

struct ReplyAccess {
    /// Takes ownership of a hiredis reply (nullptr: a nil Reply).
    static Reply adopt(redisReply* reply);
    /// A reply whose memory `owner` keeps alive: the replies of one pipeline
    /// share one owner instead of one allocation each.
    static Reply adopt_shared(std::shared_ptr<const void> owner, const redisReply* node);
};

}  // namespace retools::detail
