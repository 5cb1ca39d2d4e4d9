#pragma once
// One job as a worker holds it in its processing list.

#include <cstddef>
#include <string>
#include <string_view>

namespace retools::detail {

/// One job taken by a worker, exactly as it sits in `retools:processing:<id>`:
/// `"<queue name>\n<payload>"`. The queue name rides along so a dead worker's
/// jobs can be put back where they came from; the payload stays verbatim.
struct TakenJob {
    std::string entry;
    std::size_t split = 0;  // index of the '\n'

    static TakenJob from_entry(std::string entry);
    std::string_view queue() const noexcept { return std::string_view(entry).substr(0, split); }
    std::string_view payload() const noexcept { return std::string_view(entry).substr(split + 1); }
};

}  // namespace retools::detail
