#pragma once
// The one place where failures become exceptions: transport and protocol
// failures, handshake refusals and server error replies are mapped to the
// retools::Error tree here, so every component reports them the same way.
// Messages name the server (ConnectionOptions::describe()), the step and the
// command, never a password.

#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/reply.hpp>

namespace retools::detail {

/// ConnectionError: `server` failed while `during` (e.g. "reading a reply") because `why`.
[[noreturn]] void throw_connection_error(std::string_view server, std::string_view during,
                                         std::string_view why);

/// TimeoutError: `server` did not answer within `timeout_ms` while `during`.
[[noreturn]] void throw_timeout_error(std::string_view server, std::string_view during, long long timeout_ms,
                                      std::string_view hint = {});

/// ConnectionError whose call never reached the server (maybe_executed() false).
[[noreturn]] void throw_not_sent(const std::string& message);

/// The library's access to an exception's private state.
struct ErrorAccess {
    /// Marks `e` (being handled, to be rethrown) as raised before anything was sent.
    static void mark_not_sent(ConnectionError& e) noexcept { e.maybe_executed_ = false; }
};

/// ConnectionError (or TimeoutError for ETIMEDOUT) from an errno value.
[[noreturn]] void throw_system_error(std::string_view server, std::string_view during, int error);

/// The server refused a step of the connection handshake: AUTH gives
/// AuthenticationError, anything else (SELECT) ConfigurationError.
[[noreturn]] void throw_handshake_error(std::string_view server, std::string_view step, bool authentication,
                                        const Reply& reply);

/// ReplyError with the server's message of an error reply (Reply::check).
[[noreturn]] void throw_reply_error(const Reply& reply);

/// ReplyError: a reply of the wrong type for the accessor used.
[[noreturn]] void throw_reply_type_error(std::string_view wanted, std::string_view got);

/// ReplyError with a message of the library's own (e.g. an aborted transaction).
[[noreturn]] void throw_reply_error(std::string_view message);

/// Throws (as throw_command_error) for the first error reply among the
/// replies to `pipeline`'s commands, as Connection::execute returns them.
void check_replies(const std::vector<Reply>& replies, const Pipeline& pipeline);

}  // namespace retools::detail
