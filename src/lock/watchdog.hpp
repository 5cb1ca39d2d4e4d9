#pragma once
// Lock::Watchdog: the thread that renews a held lock's TTL (LockOptions::auto_renew).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include <retools/connection.hpp>
#include <retools/lock.hpp>

namespace retools {

/// Renews the TTL every ttl/3 from its own thread, with its own copies of
/// everything it needs, so the Lock object may move while it runs.
class Lock::Watchdog {
public:
    Watchdog(Connection conn, std::string key, std::string token, std::chrono::milliseconds ttl);
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() { stop(); }

    /// Whether this process is the one that started the thread (false in a forked child).
    bool in_owner_process() const noexcept;

    /// Stops and joins the thread. Only in the owner process: in a forked
    /// child the thread does not exist and the mutex and condition variable
    /// are copies in an arbitrary state (destroying a condition variable a
    /// parent thread waits on blocks forever).
    void stop() noexcept;

    /// Whether a renewal found the key no longer holding the token.
    bool lost() const noexcept { return lost_.load(std::memory_order_acquire); }

private:
    void run();

    Connection conn_;
    std::string key_;
    std::string token_;
    std::chrono::milliseconds ttl_;
    long pid_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::atomic<bool> lost_{false};
    std::thread thread_;  // last: started once every other member exists
};

}  // namespace retools
