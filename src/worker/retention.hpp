#pragma once
// The failed list's bound (WorkerOptions::failed_retention): every worker
// trims retools:failed at start-up and with each recovery step.

#include <cstddef>

#include <retools/connection.hpp>
#include <retools/worker.hpp>

namespace retools::detail {

/// Trims retools:failed to `retention` (src/worker/lua/trim_failed.lua) and
/// adds what it removed to retools:stat:failed_trimmed. Returns that count.
std::size_t trim_failed(const Connection& conn, const FailedRetention& retention);

}  // namespace retools::detail
