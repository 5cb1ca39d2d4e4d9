#include "client/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/command_table.hpp"
#include "client/connection_access.hpp"
#include "client/resp_commands.hpp"

namespace retools::detail {

void throw_connection_error(std::string_view server, std::string_view during, std::string_view why) {
    throw ConnectionError(fmt::format("Redis {} failed while {}: {}", server, during, why));
}

void throw_not_sent(const std::string& message) {
    throw ConnectionError(message, false);
}

void throw_timeout_error(std::string_view server, std::string_view during, long long timeout_ms,
                         std::string_view hint) {
    throw TimeoutError(fmt::format("Redis {} timed out while {} (no answer within {} ms){}{}", server, during,
                                   timeout_ms, hint.empty() ? "" : ": ", hint));
}

void throw_system_error(std::string_view server, std::string_view during, int error) {
    std::string why = std::strerror(error);
    if (error == ETIMEDOUT)
        throw TimeoutError(fmt::format("Redis {} timed out while {} ({})", server, during, why));
    throw_connection_error(server, during, why);
}

void throw_handshake_error(std::string_view server, std::string_view step, bool authentication,
                           const Reply& reply) {
    std::string message = fmt::format("Redis {}: {} failed: {}", server, step, reply.error_message());
    if (authentication) throw AuthenticationError(message);
    throw ConfigurationError(message);
}

void throw_reply_error(const Reply& reply) {
    throw ReplyError(std::string(reply.error_message()));
}

void throw_reply_type_error(std::string_view wanted, std::string_view got) {
    throw ReplyError(fmt::format("expected {} reply, got {}", wanted, got));
}

void throw_reply_error(std::string_view message) {
    throw ReplyError(std::string(message));
}

namespace {

// The first `limit` arguments of command number `index` in a RESP buffer.
std::vector<std::string_view> leading_args(std::string_view resp, std::size_t index, std::size_t limit) {
    std::vector<std::string_view> found;
    std::size_t command = 0;
    for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view) {
        if (command++ < index) return true;
        found.assign(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(std::min(limit, args.size())));
        return false;
    });
    return found;
}

std::string_view shortened(std::string_view arg) {
    return arg.substr(0, 200);
}

}  // namespace

void throw_command_error(const Reply& reply, const CommandBuffer& buffer, std::size_t index) {
    auto args = leading_args(buffer.data(), index, 8);
    std::string what;
    if (!args.empty() && (args[0] == "EVALSHA" || args[0] == "EVAL")) {
        // Name the keys the script was given, not its hash or source.
        what = "script";
        bool first = true;
        visit_keys(args, [&](std::string_view key) {
            what.append(first ? " on " : ", ").append(shortened(key));
            first = false;
        });
    } else if (!args.empty() && command_info(args[0]).secret) {
        what = std::string(args[0]);  // the next argument may be a password
    } else {
        for (std::size_t i = 0; i < args.size() && i < 2; ++i)
            what.append(i ? " " : "").append(shortened(args[i]));
    }
    throw ReplyError(fmt::format("{}: {}", what, reply.error_message()));
}

void check_replies(const std::vector<Reply>& replies, const Pipeline& pipeline) {
    for (std::size_t i = 0; i < replies.size(); ++i)
        if (replies[i].is_error()) throw_command_error(replies[i], ConnectionAccess::buffer(pipeline), i);
}

}  // namespace retools::detail
