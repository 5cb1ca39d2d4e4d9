// The process-wide log handler (include/retools/log.hpp).
#include <pthread.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include <retools/log.hpp>

namespace retools {
namespace {

// The handler is copied out under the mutex and called outside it, so a
// handler may call set_log_handler (or log) without deadlocking, and a slow
// handler never holds up one being set.
struct HandlerSlot {
    std::mutex mutex;
    std::shared_ptr<const LogHandler> handler;  // null: the default

    HandlerSlot() {
        // A job's forked process may log: the child must not inherit the
        // mutex locked by a thread that does not exist there.
        ::pthread_atfork([] { slot().mutex.lock(); }, [] { slot().mutex.unlock(); },
                         [] { slot().mutex.unlock(); });
    }
    static HandlerSlot& slot() {
        // Never destroyed: a static's destructor may log during exit.
        static HandlerSlot* s = new HandlerSlot;
        return *s;
    }
};

// A message logged while this thread is inside a handler goes to stderr: a
// handler that uses retools (and so may log) cannot recurse without end.
thread_local bool in_handler = false;

void write_stderr(LogLevel level, std::string_view message) noexcept {
    try {
        std::string line;
        line.reserve(message.size() + 12);
        line.append("[").append(to_string(level)).append("] ").append(message).push_back('\n');
        // One write per line, so lines from several threads do not interleave.
        std::fwrite(line.data(), 1, line.size(), stderr);
    } catch (...) {
        // Out of memory: the message is lost, the caller is not.
    }
}

}  // namespace

std::string_view to_string(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::warning:
            return "warning";
        case LogLevel::error:
            return "error";
    }
    return "unknown";
}

void set_log_handler(LogHandler handler) {
    std::shared_ptr<const LogHandler> next;
    if (handler) next = std::make_shared<const LogHandler>(std::move(handler));
    auto& s = HandlerSlot::slot();
    std::shared_ptr<const LogHandler> previous;
    {
        std::lock_guard lock(s.mutex);
        previous = std::exchange(s.handler, std::move(next));
    }
    // `previous` (and what it captured) is destroyed here, outside the lock;
    // a thread still running it holds its own reference.
}

namespace detail {

void log(LogLevel level, std::string_view message) noexcept {
    std::shared_ptr<const LogHandler> handler;
    if (!in_handler) {
        auto& s = HandlerSlot::slot();
        std::lock_guard lock(s.mutex);
        handler = s.handler;
    }
    if (!handler) {
        write_stderr(level, message);
        return;
    }
    in_handler = true;
    try {
        (*handler)(level, message);
    } catch (...) {
        // A throwing handler must not take the caller down: the message still goes out.
        write_stderr(level, message);
    }
    in_handler = false;
}

}  // namespace detail
}  // namespace retools
