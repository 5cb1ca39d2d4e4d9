#pragma once
// Codec<T>: how a cached value becomes the bytes stored in Redis and back in
// a region with ValueFormat::native (regions store pickle by default: see
// retools/pickle.hpp).

#include <charconv>
#include <cmath>
#include <concepts>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/detail/concepts.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>

namespace retools {

/// How a cache region stores values (CacheRegionOptions::value_format).
enum class ValueFormat {
    /// Python's pickle, as Python retools stores values: a C++ and a Python
    /// service calling the same cached function share one value (see
    /// retools/pickle.hpp for the mapping). A type with its own Codec<T> is
    /// stored as Python bytes holding Codec<T>::encode(). The default.
    pickle,
    /// Codec<T>: raw bytes for std::string, text for numbers, JSON for the
    /// rest. Python retools cannot read these values.
    native,
};

/// Turns a cached value into bytes and back in a region with
/// ValueFormat::native; in a pickle region (the default) a specialization of
/// your own is stored as Python bytes holding what encode() returns. Built in:
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
/// the cache then treats the stored value as a miss and regenerates it.
/// `encode` of a JSON value that JSON text cannot hold exactly (NaN or
/// infinity, a string that is not UTF-8) throws retools::Error; the cache then
/// returns the value without storing it. To
/// store your own type differently, specialize:
///
/// ```cpp
/// template <> struct retools::Codec<Point> {
///     static std::string encode(const Point& p) { return fmt::format("{},{}", p.x, p.y); }
///     static std::optional<Point> decode(std::string_view bytes) { return parse_point(bytes); }
/// };
/// ```
///
/// A value written by Python retools (a pickle) is a miss for a native
/// region (and the reverse), never a wrong value.
template <class T, class = void>
struct Codec {
    /// No codec: a type without one cannot be cached (cache_region() says so at compile time).
    using retools_no_codec = void;
};

namespace detail {

template <class T>
concept JsonConvertible = requires(nlohmann::json& j, const T& value, T& out) {
    nlohmann::to_json(j, value);
    nlohmann::from_json(static_cast<const nlohmann::json&>(j), out);
};

/// JSON text that reads back as exactly `j`; throws retools::Error when JSON
/// cannot hold it (NaN or infinity, which nlohmann writes as null; a string
/// that is not UTF-8).
inline std::string json_text(const nlohmann::json& j) {
    // Non-finite numbers first, without recursion.
    std::vector<const nlohmann::json*> todo{&j};
    while (!todo.empty()) {
        const nlohmann::json* cur = todo.back();
        todo.pop_back();
        if (cur->is_number_float() && !std::isfinite(cur->get<double>()))
            throw Error("JSON cannot hold NaN or infinity");
        if (cur->is_structured())
            for (const auto& e : *cur) todo.push_back(&e);
    }
    try {
        return j.dump();
    } catch (const nlohmann::json::type_error& e) {
        throw Error(std::string("JSON cannot hold this value: ") + e.what());
    }
}

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
    using retools_builtin = void;
    static std::string encode(const std::string& value) { return value; }
    static std::optional<std::string> decode(std::string_view bytes) { return std::string(bytes); }
};

template <>
struct Codec<bool> {
    using retools_builtin = void;
    static std::string encode(bool value) { return value ? "true" : "false"; }
    static std::optional<bool> decode(std::string_view bytes) {
        if (bytes == "true") return true;
        if (bytes == "false") return false;
        return std::nullopt;
    }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
    using retools_builtin = void;
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
    using retools_builtin = void;
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
    using retools_builtin = void;
    static std::string encode(const nlohmann::json& value) { return detail::json_text(value); }
    static std::optional<nlohmann::json> decode(std::string_view bytes) {
        nlohmann::json doc = nlohmann::json::parse(bytes, nullptr, false);
        if (doc.is_discarded()) return std::nullopt;
        return doc;
    }
};

template <class T>
struct Codec<std::optional<T>, std::enable_if_t<detail::JsonConvertible<T>>> {
    using retools_builtin = void;
    static std::string encode(const std::optional<T>& value) {
        return value ? detail::json_text(nlohmann::json(*value)) : std::string("null");
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
                                 !detail::is_optional<T>::value && !std::is_same_v<T, nlohmann::json> &&
                                 detail::JsonConvertible<T>>> {
    using retools_builtin = void;
    static std::string encode(const T& value) { return detail::json_text(nlohmann::json(value)); }
    static std::optional<T> decode(std::string_view bytes) { return detail::json_decode<T>(bytes); }
};

namespace detail {

/// A T with a usable Codec (encode to bytes, decode to optional<T>).
template <class T>
concept Encodable = requires(const T& value, std::string_view bytes) {
    { Codec<T>::encode(value) } -> std::convertible_to<std::string>;
    { Codec<T>::decode(bytes) } -> std::same_as<std::optional<T>>;
};

/// A Codec<T> specialization of the user's own (not one of the built-in ones).
template <class T>
concept UserCodec = Encodable<T> && !requires {
    typename Codec<T>::retools_builtin;
};

}  // namespace detail

}  // namespace retools
