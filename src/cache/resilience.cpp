#include "cache/resilience.hpp"

#include <atomic>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/log.hpp>

#include "cache/registry.hpp"

namespace retools {
namespace detail {
namespace {

using ThrottleClock = std::chrono::steady_clock;

std::atomic<std::uint64_t> bypassed{0};
std::atomic<std::uint64_t> served_stale{0};

// A warning at most once a second per kind: an outage must not flood the log.
void warn_rarely(std::atomic<long long>& last, const std::string& message) {
    const long long now =
        std::chrono::duration_cast<std::chrono::seconds>(ThrottleClock::now().time_since_epoch()).count();
    long long seen = last.load(std::memory_order_relaxed);
    if (now <= seen || !last.compare_exchange_strong(seen, now)) return;
    log(LogLevel::warning, message);
}

struct Throttle {
    std::mutex mutex;
    std::map<std::string, ThrottleClock::time_point, std::less<>> until;
};

Throttle& throttle() {
    static Throttle* t = new Throttle;  // never destroyed: callers may run during exit
    return *t;
}

}  // namespace

void note_bypass(const RegionSettings& region, const ConnectionError& error, std::size_t calls) {
    bypassed.fetch_add(calls, std::memory_order_relaxed);
    static std::atomic<long long> last{0};
    warn_rarely(last, fmt::format("retools: cache region {}: Redis failed, calling the function without the "
                                  "cache (on_redis_error = call_through): {}",
                                  region.name, error.what()));
}

void note_store_skipped(const RegionSettings& region, const ConnectionError& error) {
    static std::atomic<long long> last{0};
    warn_rarely(last, fmt::format("retools: cache region {}: Redis failed while storing computed values; "
                                  "returned them uncached (on_redis_error = call_through): {}",
                                  region.name, error.what()));
}

void note_fail_safe(const RegionSettings& region, const std::string& value_key, std::string_view what) {
    served_stale.fetch_add(1, std::memory_order_relaxed);
    {
        std::lock_guard lock(throttle().mutex);
        auto& until = throttle().until;
        const auto now = ThrottleClock::now();
        if (until.size() >= 10000)
            std::erase_if(until, [&](const auto& entry) { return entry.second <= now; });
        until[value_key] = now + fail_safe_throttle;
    }
    static std::atomic<long long> last{0};
    warn_rarely(last, fmt::format("retools: cache region {}: the function failed for {}; served the stored "
                                  "value instead (fail_safe_max_age): {}",
                                  region.name, value_key, what));
}

bool fail_safe_throttled(const std::string& value_key) {
    std::lock_guard lock(throttle().mutex);
    auto& until = throttle().until;
    auto it = until.find(value_key);
    if (it == until.end()) return false;
    if (it->second > ThrottleClock::now()) return true;
    until.erase(it);
    return false;
}

}  // namespace detail

std::uint64_t CacheRegion::bypassed_calls() noexcept {
    return detail::bypassed.load(std::memory_order_relaxed);
}

std::uint64_t CacheRegion::fail_safe_served() noexcept {
    return detail::served_stale.load(std::memory_order_relaxed);
}

}  // namespace retools
