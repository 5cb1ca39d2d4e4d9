#pragma once
// Reading the queue's small JSON records (failed entries, results) with
// errors that name the record. Not installed.

#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/errors.hpp>

#include "queue/json_limits.hpp"

namespace retools::detail {

/// Parses `text` as a JSON object; QueueError naming `what` otherwise (also
/// when it nests deeper than max_json_depth, checked before parsing).
inline nlohmann::json parse_object(std::string_view text, std::string_view what) {
    check_json_depth(text, what);
    nlohmann::json data;
    try {
        data = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw QueueError(fmt::format("{} is not valid JSON: {}", what, e.what()));
    }
    if (!data.is_object())
        throw QueueError(fmt::format("{} is a JSON {}, not an object", what, data.type_name()));
    return data;
}

/// The string field `name` of `data`; QueueError naming `what` when absent or not a string.
inline std::string string_field(const nlohmann::json& data, const char* name, std::string_view what) {
    auto it = data.find(name);
    if (it == data.end() || !it->is_string())
        throw QueueError(fmt::format("{} has no string field \"{}\"", what, name));
    return it->get<std::string>();
}

}  // namespace retools::detail
