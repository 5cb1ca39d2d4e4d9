#pragma once
// A cached function's result as stored bytes and back, in the region's
// ValueFormat. Bytes that are not a value of the caller's type are a miss,
// never a wrong value.

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <retools/codec.hpp>
#include <retools/pickle.hpp>

namespace retools::detail {

/// A type the cache can store: a built-in pickle mapping, or a Codec<T>.
template <class T>
concept Cacheable = pickle::Mapped<T> || Encodable<T>;

/// Whether `bytes` are a whole, valid pickle (so not a native value of
/// another encoding). Cheap for what is not: a pickle ends with STOP.
inline bool is_pickle(std::string_view bytes) {
    if (bytes.empty() || bytes.back() != '.') return false;
    return static_cast<bool>(pickle::decode(bytes));
}

/// Encodes `value` for storing; false, with the reason, when it cannot be
/// stored exactly (the caller still returns it).
template <Cacheable T>
bool encode_value(ValueFormat format, const T& value, std::string& out, std::string& why) {
    if (format == ValueFormat::pickle) {
        if constexpr (UserCodec<T> || !pickle::Mapped<T>) {
            std::string bytes;
            try {
                bytes = std::string(Codec<T>::encode(value));
            } catch (const std::exception& e) {
                why = e.what();
                return false;
            }
            pickle::Writer w{out};
            w.begin();
            w.bytes(bytes);
            w.end();
        } else {
            out = pickle::dumps(value);
        }
        return true;
    }
    if constexpr (Encodable<T>) {
        try {
            out = std::string(Codec<T>::encode(value));
            return true;
        } catch (const std::exception& e) {
            why = e.what();
            return false;
        }
    } else {
        why = "this type has no retools::Codec for a native region";
        return false;
    }
}

/// Decodes stored bytes; nullopt when they are not a T in this format.
template <Cacheable T>
std::optional<T> decode_value(ValueFormat format, std::string_view bytes) {
    try {
        if (format == ValueFormat::pickle) {
            if constexpr (UserCodec<T> || !pickle::Mapped<T>) {
                auto data = pickle::loads<std::string>(bytes);
                if (!data) return std::nullopt;
                return Codec<T>::decode(*data);
            } else {
                return pickle::loads<T>(bytes);
            }
        }
        if constexpr (Encodable<T>) {
            // A raw std::string takes any bytes: refuse a pickle (Python's value).
            if constexpr (std::is_same_v<T, std::string>)
                if (is_pickle(bytes)) return std::nullopt;
            return Codec<T>::decode(bytes);
        }
    } catch (const std::exception&) {
        // a user decode that throws: not ours, or corrupt
    }
    return std::nullopt;
}

}  // namespace retools::detail
