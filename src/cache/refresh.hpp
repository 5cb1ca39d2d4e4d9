#pragma once
// The shared background executor of early refreshes (CacheRegionOptions::early_refresh_beta).

#include <cstddef>
#include <functional>
#include <string>

namespace retools::detail {

/// Threads that run early refreshes: small, so that a burst of hot keys cannot
/// take over the machine; refreshes beyond what they can run are dropped (the
/// value is still fresh, and a later read triggers its refresh again).
inline constexpr std::size_t refresh_threads = 2;
/// Refreshes waiting for a thread, at most; more are dropped.
inline constexpr std::size_t refresh_queue_limit = 64;

/// Queues `task` for a background thread unless one for `key` is already
/// queued or running in this process (or the queue is full): false then.
/// Never blocks; a task that throws is dropped silently. After fork() the
/// child starts threads of its own on first use.
bool submit_refresh(const std::string& key, std::function<void()> task);

/// Waits (up to `within_ms`) until no refresh is queued or running; true if idle. For tests.
bool refreshes_idle(long within_ms);

}  // namespace retools::detail
