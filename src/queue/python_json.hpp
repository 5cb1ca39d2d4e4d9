#pragma once
// Python-compatible JSON writing and name validation shared by the queue's
// sources (payloads, failed entries, results). Not installed.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace retools {

namespace detail {

/// Appends `value` as Python's `json.dumps` writes it (default arguments:
/// `", "`/`": "` separators, ensure_ascii). Throws QueueError for non-finite
/// numbers, invalid UTF-8 and binary values, naming `what`.
void python_json_dump(const nlohmann::json& value, std::string& out, std::string_view what);

/// Appends `text` as a Python `json.dumps` string literal (with quotes).
void python_json_string(std::string_view text, std::string& out, std::string_view what);

/// Throws ConfigurationError unless `name` is a usable queue name: non-empty,
/// without `:` or `,` (the worker id and `:queues` key join names with `,`).
void validate_queue_name(std::string_view name);
/// Throws ConfigurationError when a job name is empty.
void validate_job_name(std::string_view name);

}  // namespace detail

}  // namespace retools
