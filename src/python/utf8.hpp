#pragma once
// UTF-8 decoding and encoding shared by the pickle codec, Python repr, and
// the payload checks: one strict decoder, so every reader of untrusted bytes
// agrees on what is valid.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace retools::detail {

/// Decodes the UTF-8 sequence at `s[i]` into `cp`; returns its length, or 0
/// when it is malformed (a bad lead or continuation byte, truncated, overlong,
/// past U+10FFFF). `surrogates`: accept encoded U+D800..U+DFFF, as Python
/// writes lone surrogates ("surrogatepass"); strict UTF-8 refuses them.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i, std::uint32_t& cp,
                                 bool surrogates = false) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    std::size_t n;
    std::uint32_t min;
    if ((b0 & 0xe0) == 0xc0) {
        n = 2, cp = b0 & 0x1f, min = 0x80;
    } else if ((b0 & 0xf0) == 0xe0) {
        n = 3, cp = b0 & 0x0f, min = 0x800;
    } else if ((b0 & 0xf8) == 0xf0) {
        n = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff) return 0;
    if (!surrogates && cp >= 0xd800 && cp <= 0xdfff) return 0;
    return n;
}

/// True when all of `s` is valid UTF-8 (see utf8_sequence for `surrogates`).
inline bool valid_utf8(std::string_view s, bool surrogates = false) noexcept {
    for (std::size_t i = 0; i < s.size();) {
        // ASCII runs, 8 bytes at a time: most cached text is ASCII, and this
        // check runs on every value a cache hit decodes.
        std::uint64_t word;
        while (i + 8 <= s.size() &&
               (std::memcpy(&word, s.data() + i, 8), (word & 0x8080808080808080ULL) == 0))
            i += 8;
        if (i == s.size()) break;
        std::uint32_t cp;
        const std::size_t n = utf8_sequence(s, i, cp, surrogates);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

/// Appends code point `cp` (at most U+10FFFF) encoded as UTF-8.
inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

}  // namespace retools::detail
