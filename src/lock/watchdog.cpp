#include "lock/watchdog.hpp"

#include <unistd.h>

#include <algorithm>
#include <exception>

#include "lock/scripts.hpp"

namespace retools {

Lock::Watchdog::Watchdog(Connection conn, std::string key, std::string token, std::chrono::milliseconds ttl)
    : conn_(std::move(conn)),
      key_(std::move(key)),
      token_(std::move(token)),
      ttl_(ttl),
      pid_(static_cast<long>(::getpid())) {
    thread_ = std::thread([this] { run(); });
}

bool Lock::Watchdog::in_owner_process() const noexcept {
    return static_cast<long>(::getpid()) == pid_;
}

void Lock::Watchdog::stop() noexcept {
    if (!thread_.joinable()) return;
    {
        std::lock_guard guard(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

void Lock::Watchdog::run() {
    const auto interval = std::max(ttl_ / 3, std::chrono::milliseconds{1});
    std::unique_lock guard(mutex_);
    while (!wake_.wait_for(guard, interval, [this] { return stopping_; })) {
        guard.unlock();
        bool ours = true;
        try {
            ours = detail::lock_extend_script()(conn_, {key_}, token_, ttl_.count()).as_integer() == 1;
        } catch (const std::exception&) {
            // Unreachable server: try again next tick; the key outlives two missed ticks.
        }
        guard.lock();
        if (!ours) {
            lost_.store(true, std::memory_order_release);
            return;
        }
    }
}

}  // namespace retools
