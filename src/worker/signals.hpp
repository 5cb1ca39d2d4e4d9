#pragma once
// Signals while a worker works, delivered to ordinary code.

#include <functional>
#include <thread>

namespace retools::detail {

/// Delivers TERM, INT, QUIT, USR1, USR2 and CONT to `on_signal`, on a thread of
/// its own: the handlers only write the signal number to a pipe.
class SignalWatcher {
public:
    explicit SignalWatcher(std::function<void(int)> on_signal);
    ~SignalWatcher();
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

private:
    std::function<void(int)> on_signal_;
    int fds_[2] = {-1, -1};
    int slot_ = -1;
    std::thread thread_;
};

/// In a forked job process: TERM and CONT default, INT, QUIT, USR1 and USR2
/// ignored (they are the worker's to act on).
void reset_worker_signals() noexcept;

}  // namespace retools::detail
