#pragma once
// In-process single flight: while Redis cannot be reached, the cache's
// dogpile lock cannot be taken, so concurrent callers of one key in this
// process share one computation instead (a Redis outage must not turn into a
// stampede on whatever the function calls). Keyed by the value's Redis key.

#include <string>

#include <retools/detail/cache_load.hpp>

namespace retools::detail {

/// Produces `target`'s value, or waits for the computation of `key` another
/// thread of this process has under way and takes its result. On return,
/// `storable`, `bytes` and `why` are as LoadTarget::produce sets them. The
/// function's exception reaches every caller that shared its computation.
bool produce_once(const std::string& key, LoadTarget& target, std::string& bytes, std::string& why);

}  // namespace retools::detail
