#pragma once
// What the cache does when Redis or the function fails: the fail-open
// bypass's counter and log line, and fail-safe's counter, log line and
// throttle (after a stale value was served instead of the function's
// exception, callers of that key in this process get the stale value without
// calling the function for a second). The load path (load.cpp) decides when.

#include <chrono>
#include <string>
#include <string_view>

#include <retools/errors.hpp>

namespace retools::detail {

struct RegionSettings;

/// How long fail-safe spares a failing function after serving a stale value.
inline constexpr std::chrono::milliseconds fail_safe_throttle{1000};

/// `calls` cached calls of `region` answered without the cache because of `error`.
void note_bypass(const RegionSettings& region, const ConnectionError& error, std::size_t calls);
/// Storing what was computed failed because of `error`; the values were returned.
void note_store_skipped(const RegionSettings& region, const ConnectionError& error);
/// A stale value of `value_key` was served because the function threw `what`.
void note_fail_safe(const RegionSettings& region, const std::string& value_key, std::string_view what);
/// Whether `value_key` was served stale by fail-safe less than fail_safe_throttle ago.
bool fail_safe_throttled(const std::string& value_key);

}  // namespace retools::detail
