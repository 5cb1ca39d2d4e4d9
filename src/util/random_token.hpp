#pragma once
// Random ids: Lock tokens and job ids, from one per-thread, fork-aware generator.

#include <cstdint>
#include <string>

namespace retools::detail {

/// A random uuid4 as 32 lowercase hex characters, like Python's
/// `uuid.uuid4().hex` (what the original uses for lock values and job ids). Each thread has its own generator
/// seeded from `std::random_device`; a forked child re-seeds before its first token, so parent and child
/// never produce the same sequence.
std::string uuid4_hex();

/// A Lock's per-acquisition token: uuid4_hex().
std::string random_token();

/// 64 random bits from the same per-thread, fork-aware generator (for backoff jitter).
std::uint64_t random_u64();

}  // namespace retools::detail
