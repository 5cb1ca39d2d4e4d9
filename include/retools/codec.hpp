#pragma once
// Codec<T>: how a cached value becomes the bytes stored in Redis and back.

#include <charconv>
#include <cmath>
#include <concepts>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include <retools/detail/python_repr.hpp>

namespace retools {

/// Turns a cached value into bytes and back. Built in:
///
/// | T | stored as |
/// | --- | --- |
/// | `std::string` | the bytes themselves |
/// | `bool` | `true` / `false` |
/// | integers | decimal text (`42`) |
/// | floating point | Python-style shortest text (`0.1`, `1e+16`, `inf`, `nan`) |
/// | `std::optional<T>` of a JSON type | JSON text, `null` when empty |
/// | anything with nlohmann `to_json` / `from_json` (containers, maps, your structs) | JSON text |
///
/// `decode` returns `std::nullopt` (or throws) when the bytes are not a T:
/// the cache then treats the stored value as a miss and regenerates it. To
/// store your own type differently, specialize:
///
/// ```cpp
/// template <> struct retools::Codec<Point> {
///     static std::string encode(const Point& p) { return fmt::format("{},{}", p.x, p.y); }
///     static std::optional<Point> decode(std::string_view bytes) { return parse_point(bytes); }
/// };
/// ```
///
/// The original stores `cPickle` bytes, which C++ cannot read; a value written
/// by Python is therefore a miss for C++ (and the reverse), never an error.
template <class T, class = void>
struct Codec {
    static_assert(sizeof(T) == 0,
                  "retools::Codec<T>: no codec for this cached type. Give it nlohmann "
                  "to_json/from_json, or specialize retools::Codec<T> with encode/decode.");
};

namespace detail {

template <class T>
struct is_std_optional : std::false_type {};
template <class T>
struct is_std_optional<std::optional<T>> : std::true_type {};

template <class T>
concept JsonConvertible = requires(nlohmann::json& j, const T& value, T& out) {
    nlohmann::to_json(j, value);
    nlohmann::from_json(static_cast<const nlohmann::json&>(j), out);
};

/// Parses a JSON document; nullopt when it is not valid JSON or not a T.
template <class T>
std::optional<T> json_decode(std::string_view bytes) {
    nlohmann::json doc = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return std::nullopt;
    try {
        return doc.template get<T>();
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

}  // namespace detail

template <>
struct Codec<std::string> {
    static std::string encode(const std::string& value) { return value; }
    static std::optional<std::string> decode(std::string_view bytes) { return std::string(bytes); }
};

template <>
struct Codec<bool> {
    static std::string encode(bool value) { return value ? "true" : "false"; }
    static std::optional<bool> decode(std::string_view bytes) {
        if (bytes == "true") return true;
        if (bytes == "false") return false;
        return std::nullopt;
    }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
    static std::string encode(T value) {
        char buf[24];
        auto res = std::to_chars(buf, buf + sizeof buf, value);
        return std::string(buf, res.ptr);
    }
    static std::optional<T> decode(std::string_view bytes) {
        T value{};
        auto [end, ec] = std::from_chars(bytes.data(), bytes.data() + bytes.size(), value);
        if (ec != std::errc{} || end != bytes.data() + bytes.size() || bytes.empty()) return std::nullopt;
        return value;
    }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_floating_point_v<T>>> {
    static std::string encode(T value) { return detail::python_repr(static_cast<double>(value)); }
    static std::optional<T> decode(std::string_view bytes) {
        if (bytes == "inf") return static_cast<T>(INFINITY);
        if (bytes == "-inf") return static_cast<T>(-INFINITY);
        if (bytes == "nan") return static_cast<T>(NAN);
        double value = 0;
        auto [end, ec] = std::from_chars(bytes.data(), bytes.data() + bytes.size(), value);
        if (ec != std::errc{} || end != bytes.data() + bytes.size() || bytes.empty()) return std::nullopt;
        return static_cast<T>(value);
    }
};

template <>
struct Codec<nlohmann::json> {
    static std::string encode(const nlohmann::json& value) { return value.dump(); }
    static std::optional<nlohmann::json> decode(std::string_view bytes) {
        nlohmann::json doc = nlohmann::json::parse(bytes, nullptr, false);
        if (doc.is_discarded()) return std::nullopt;
        return doc;
    }
};

template <class T>
struct Codec<std::optional<T>, std::enable_if_t<detail::JsonConvertible<T>>> {
    static std::string encode(const std::optional<T>& value) {
        return value ? nlohmann::json(*value).dump() : std::string("null");
    }
    static std::optional<std::optional<T>> decode(std::string_view bytes) {
        nlohmann::json doc = nlohmann::json::parse(bytes, nullptr, false);
        if (doc.is_discarded()) return std::nullopt;
        std::optional<std::optional<T>> out;
        if (doc.is_null()) {
            out.emplace();
            return out;
        }
        try {
            out.emplace(std::in_place, doc.template get<T>());
        } catch (const nlohmann::json::exception&) {
            out.reset();
        }
        return out;
    }
};

template <class T>
struct Codec<T, std::enable_if_t<!std::is_arithmetic_v<T> && !std::is_same_v<T, std::string> &&
                                 !detail::is_std_optional<T>::value && !std::is_same_v<T, nlohmann::json> &&
                                 detail::JsonConvertible<T>>> {
    static std::string encode(const T& value) { return nlohmann::json(value).dump(); }
    static std::optional<T> decode(std::string_view bytes) { return detail::json_decode<T>(bytes); }
};

namespace detail {

/// A T with a usable Codec (encode to bytes, decode to optional<T>).
template <class T>
concept Encodable = requires(const T& value, std::string_view bytes) {
    { Codec<T>::encode(value) } -> std::convertible_to<std::string>;
    { Codec<T>::decode(bytes) } -> std::same_as<std::optional<T>>;
};

}  // namespace detail

}  // namespace retools
