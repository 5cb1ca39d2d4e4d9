#pragma once
// Floats written the way Python's repr(float) writes them, because the
// original stores timestamps and scores as that text.

#include <string>

namespace retools::detail {

/// Shortest round-trip text, Python style: `1.0`, `0.1`, `1e+16`, `1e-05`,
/// `inf`, `-inf`, `nan`.
std::string python_repr(double value);
/// The same, appended to `out` (no string of its own).
void append_python_repr(std::string& out, double value);

}  // namespace retools::detail
