#pragma once
// The pickle reader without its fast path for a single str (python/pickle.cpp),
// so the fuzz target can check that both read every input the same way.

#include <string_view>

#include <retools/pickle.hpp>

namespace retools::pickle::detail {

Decoded decode_general(std::string_view data, const Limits& limits);

}  // namespace retools::pickle::detail
