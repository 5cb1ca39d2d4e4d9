// libFuzzer target for the pickle reader: any input must decode or fail with
// a reason, never crash, hang or read out of bounds; what decodes must
// re-encode and decode to the same value; the fast path for a single str
// must agree with the general reader.
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//       -Isrc tests/fuzz/fuzz_pickle.cpp src/python/pickle.cpp src/python/python_repr.cpp -lfmt -o fuzz_pickle
//   ./fuzz_pickle -max_total_time=60 tests/fuzz/corpus/pickle
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <retools/pickle.hpp>

#include "python/pickle_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace pk = retools::pickle;
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    // Small limits keep each run fast; the code paths are the same as with the defaults.
    const pk::Limits limits{.max_depth = 200, .max_values = 1 << 16, .max_bytes = 1 << 22};
    pk::Decoded d = pk::decode(input, limits);
    pk::Decoded general = pk::detail::decode_general(input, limits);
    if (bool(d) != bool(general)) std::abort();
    if (d && pk::encode(*d.value) != pk::encode(*general.value)) std::abort();
    if (!d) {
        if (d.error.empty()) std::abort();  // a miss always has a reason
        return 0;
    }
    (void)d.value->repr();
    pk::Decoded again = pk::decode(pk::encode(*d.value));
    if (!again) std::abort();
    // NaN compares unequal to itself, so compare the re-encoded bytes instead.
    if (pk::encode(*again.value) != pk::encode(*d.value)) std::abort();
    return 0;
}
