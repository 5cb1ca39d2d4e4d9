#pragma once
// Guards for untrusted JSON text (job payloads, failed-list entries), applied
// before nlohmann_json parses it: parsing, copying and re-serialising a value
// recurse once per nesting level, so a hostile 200,000-deep payload would
// overflow the stack. Also base64 for keeping arbitrary bytes inside JSON
// text (UTF-8 checks are in python/utf8.hpp).

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace retools::detail {

/// Deepest nesting of arrays/objects accepted in a payload or failed entry.
inline constexpr std::size_t max_json_depth = 512;

/// Deepest nesting of `[`/`{` in `text`, counted without recursion (strings
/// and escapes skipped); stops counting once past `limit` and returns limit + 1.
std::size_t json_depth(std::string_view text, std::size_t limit = max_json_depth);

/// Throws QueueError `"<what> nests deeper than 512 levels"` when it does.
void check_json_depth(std::string_view text, std::string_view what);

/// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);
/// Decodes standard base64; nullopt when `text` is not valid base64.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace retools::detail
