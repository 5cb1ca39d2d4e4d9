#pragma once
// Where the library's messages go: every line retools prints (a worker's job
// log, a value the cache could not store, the near cache turning itself off)
// goes through one process-wide handler. The default writes it to stderr.

#include <functional>
#include <string_view>

namespace retools {

/// How much a message matters, least first.
enum class LogLevel { debug, info, warning, error };

/// "debug", "info", "warning" or "error".
std::string_view to_string(LogLevel level) noexcept;

/// Receives each message: its level and its text (one line, no trailing newline).
/// Called on whichever thread logs, possibly several at once: it must be
/// thread-safe itself. The text is valid only during the call.
using LogHandler = std::function<void(LogLevel, std::string_view)>;

/// Sends every message the library prints to `handler` from now on, in every
/// thread; an empty function restores the default (one line on stderr,
/// "[level] text"). Safe to call while other threads log, and from inside a
/// handler. A handler that throws loses nothing: that message goes to stderr.
void set_log_handler(LogHandler handler);

namespace detail {
/// Hands `message` to the current handler; never throws.
void log(LogLevel level, std::string_view message) noexcept;
}  // namespace detail

}  // namespace retools
