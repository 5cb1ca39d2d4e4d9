#pragma once
#include <string>
#include <string_view>

namespace retools::detail {
/// Lowercase hex SHA1 (the name Redis gives a script).
std::string sha1_hex(std::string_view data);
}  // namespace retools::detail
