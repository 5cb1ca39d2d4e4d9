#pragma once
// Lock::Watchdog: keeps a held lock's TTL renewed (LockOptions::auto_renew).
// One renewal thread per process serves every auto-renewing lock, so an
// acquisition costs a timer entry, not a thread (src/lock/watchdog.cpp).

#include <chrono>
#include <memory>
#include <string>

#include <retools/connection.hpp>
#include <retools/lock.hpp>

namespace retools {
namespace detail {
struct Renewal;
class Renewer;
}  // namespace detail

/// Renews the TTL every ttl/3 through the process's renewal thread, with its
/// own copies of everything it needs, so the Lock object may move meanwhile.
class Lock::Watchdog {
public:
    Watchdog(Connection conn, std::string key, std::string token, std::chrono::milliseconds ttl);
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    /// Stops the renewals. Only in the owner process (see in_owner_process):
    /// a forked child must leak its inherited copy instead.
    ~Watchdog();

    /// Whether this process is the one that registered the renewals (false in
    /// a forked child, where the renewal thread does not exist and its mutex
    /// and condition variable are copies in an arbitrary state).
    bool in_owner_process() const noexcept;

    /// Whether a renewal found the key no longer holding the token.
    bool lost() const noexcept;

private:
    std::shared_ptr<detail::Renewer> renewer_;  // keeps the thread alive while we need it
    std::shared_ptr<detail::Renewal> renewal_;
    long pid_;
};

}  // namespace retools
