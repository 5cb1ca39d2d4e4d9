#pragma once
// Watchdog: keeps a held lock's TTL (LockOptions::auto_renew) or a limiter
// slot's expiry (LimiterOptions::auto_renew) renewed. One renewal thread per
// process serves every one of them, so an acquisition costs a timer entry,
// not a thread; it outlives the last renewal by about a second, so that
// sequential acquisitions reuse it, and a fork() ends it first when idle
// (src/lock/watchdog.cpp).

#include <chrono>
#include <memory>
#include <string>

#include <retools/connection.hpp>
#include <retools/script.hpp>

namespace retools::detail {
struct Renewal;
class Renewer;

/// Renews every ttl/3 through the process's renewal thread, with its own
/// copies of everything it needs, so the owning object may move meanwhile.
/// A renewal runs `extend` with KEYS = {key} and ARGV = {token, ttl in ms};
/// it answers 1 while the holder still holds, else 0 (lost).
class Watchdog {
public:
    Watchdog(Connection conn, std::string key, std::string token, std::chrono::milliseconds ttl,
             const Script& extend);
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

/// Stops `watchdog`'s renewals and drops it. In a forked child it is the
/// parent's: the parent's renewal thread is not ours to stop and its state
/// must not be destroyed here, so the child leaks its copy (one small object
/// per inherited hold) instead.
inline void stop_renewal(std::unique_ptr<Watchdog>& watchdog) noexcept {
    if (!watchdog) return;
    if (watchdog->in_owner_process()) {
        watchdog.reset();
    } else {
        (void)watchdog.release();
    }
}

}  // namespace retools::detail
