#pragma once
// Unpredictable per-acquisition tokens for Lock values.

#include <cstdint>
#include <string>

namespace retools::detail {

/// 32 lowercase hex characters (128 random bits), the shape of Python's
/// `uuid.uuid4().hex`. Each thread has its own generator seeded from
/// `std::random_device`; a forked child re-seeds before its first token, so
/// parent and child never produce the same sequence.
std::string random_token();

/// 64 random bits from the same per-thread, fork-aware generator (for backoff jitter).
std::uint64_t random_u64();

}  // namespace retools::detail
