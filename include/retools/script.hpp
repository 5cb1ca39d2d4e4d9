#pragma once
// Script: a Lua script run with EVALSHA, reloaded transparently on NOSCRIPT.

#include <initializer_list>
#include <ranges>
#include <string>
#include <string_view>

#include <retools/connection.hpp>

namespace retools {

/// A server-side Lua script. The SHA1 is computed locally, so the first call
/// is a plain EVALSHA; when the server does not know the script (first use,
/// `SCRIPT FLUSH`, a restarted server), it is sent once with EVAL, which also
/// caches it server-side. Keys and values always travel as KEYS/ARGV, never
/// spliced into the source.
///
/// ```cpp
/// static const retools::Script incr_if{"if redis.call('EXISTS', KEYS[1]) == 1 then "
///                                      "return redis.call('INCRBY', KEYS[1], ARGV[1]) end"};
/// retools::Reply r = incr_if(conn, {"counter"}, 5);
/// ```
class Script {
public:
    explicit Script(std::string source);

    const std::string& source() const noexcept { return source_; }
    /// Lowercase hex SHA1 of the source, as Redis computes it.
    const std::string& sha() const noexcept { return sha_; }

    /// Runs the script with `keys` as KEYS and `args` as ARGV.
    template <class... Args>
    Reply operator()(const Connection& conn, std::initializer_list<std::string_view> keys,
                     const Args&... args) const {
        return run(conn, keys, args...);
    }

    /// Same, with keys from any range of strings.
    template <class Keys, class... Args>
    Reply run(const Connection& conn, const Keys& keys, const Args&... args) const {
        detail::CommandBuffer buffer;
        buffer.add("EVALSHA", sha_, std::ranges::size(keys), keys, args...);
        Reply reply = detail::send_command(conn, buffer);
        if (is_noscript(reply)) {
            buffer.clear();
            buffer.add("EVAL", source_, std::ranges::size(keys), keys, args...);
            reply = detail::send_command(conn, buffer);
        }
        if (reply.is_error()) detail::throw_command_error(reply, buffer);
        return reply;
    }

private:
    static bool is_noscript(const Reply& reply) noexcept;

    std::string source_;
    std::string sha_;
};

}  // namespace retools
