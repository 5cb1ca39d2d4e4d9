#include <cmath>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>

namespace retools::detail {

std::string python_repr(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    // fmt's shortest round-trip form switches to exponent notation at the
    // same thresholds as Python (exp < -4 or >= 16) and pads the exponent to
    // two digits; Python adds ".0" to integral values in fixed notation.
    std::string text = fmt::format("{}", value);
    if (text.find_first_of(".e") == std::string::npos) text += ".0";
    return text;
}

}  // namespace retools::detail
