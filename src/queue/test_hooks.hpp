#pragma once
// Test hooks of the queue: not part of the public API, not installed. Tests
// reach them through the retools_test_internals target.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <retools/queue.hpp>

namespace retools::detail {

/// The payload text `qm.enqueue()` would write for `job_name` (with `qm`'s
/// subscribers; no Redis access), under the given id and without the
/// `enqueued_at` an enqueue adds: for tests that write payloads themselves.
std::string make_payload(const QueueManager& qm, std::string_view job_id, std::string_view job_name,
                         const nlohmann::json& kwargs, const nlohmann::json& metadata = nullptr);

}  // namespace retools::detail
