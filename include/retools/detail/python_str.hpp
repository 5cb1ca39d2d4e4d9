#pragma once
// Arguments rendered the way Python's str() renders the equivalent value, so a
// C++ call and a Python call with the same arguments compute the same cache key.
//
//   C++ value                          Python str()
//   std::string, string_view, char*    the text as is
//   char                               a one-character string
//   bool                               True / False
//   integers (incl. int8_t / uint8_t)  decimal
//   double, long double                repr(float): 1.0, 0.1, 1e+16, inf, nan
//   float                              repr of the shortest decimal for the float (0.1f -> 0.1)
//   nullptr, std::nullopt              None
//   std::optional<T>                   the value, or None
//   std::tuple / std::pair             (1, 'a') ; one element: (1,)
//   map, unordered_map                 {1: 'a', 2: 'b'}  (keys and values as Python's repr)
//   set, unordered_set                 {1, 2} ; empty: set()
//   other ranges (vector, list ...)    [1, 'a', None]   (elements as Python's repr)
//   anything fmt can format            fmt::format("{}", value)

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <retools/detail/concepts.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>

namespace retools::detail {

// A range whose elements are not the range itself (std::filesystem::path is).
template <class T>
concept PyRange = std::ranges::input_range<const T&> &&
    !std::is_same_v<std::remove_cvref_t<std::ranges::range_value_t<const T&>>, T>;

template <class T>
constexpr bool python_renderable();

template <class Tuple, std::size_t... I>
constexpr bool python_renderable_tuple(std::index_sequence<I...>) {
    return (python_renderable<std::remove_cvref_t<std::tuple_element_t<I, Tuple>>>() && ...);
}

/// True when T has a Python str() rendering (see the table above).
template <class T>
constexpr bool python_renderable() {
    if constexpr (StringLike<T> || std::is_arithmetic_v<T> || std::is_same_v<T, std::nullptr_t> ||
                  std::is_same_v<T, std::nullopt_t>) {
        return true;
    } else if constexpr (is_optional<T>::value) {
        return python_renderable<typename T::value_type>();
    } else if constexpr (TupleLike<T>) {
        return python_renderable_tuple<T>(std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (MapLike<T>) {
        return python_renderable<std::remove_cvref_t<typename T::key_type>>() &&
               python_renderable<std::remove_cvref_t<typename T::mapped_type>>();
    } else if constexpr (PyRange<T>) {
        return python_renderable<std::remove_cvref_t<std::ranges::range_value_t<const T&>>>();
    } else {
        return fmt::is_formattable<T>::value;
    }
}

template <class T>
concept PythonStr = python_renderable<std::remove_cvref_t<T>>();

/// Python 3's repr() of a string, for strings inside lists, tuples, dicts and
/// sets: single quotes unless the text holds a single quote and no double
/// quote; `\\`, the quote, `\\n`, `\\r`, `\\t` escaped, and every code point
/// Python does not print (controls, format characters such as U+200B and
/// U+FEFF, separators such as U+2028, private use, unassigned; Unicode 14 as
/// in Python 3.11) as `\\xhh`, `\\uhhhh` or `\\Uhhhhhhhh`. A byte that is not
/// UTF-8 shows as Python shows a str decoded with surrogateescape (`\\udcff`).
void append_python_string_repr(std::string& out, std::string_view s);

/// repr() of a float: the shortest text that reads back as the same float.
inline std::string python_repr(float value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    std::string text = fmt::format("{}", value);
    if (text.find_first_of(".e") == std::string::npos) text += ".0";
    return text;
}

template <class T>
void append_python(std::string& out, const T& value, bool repr);

template <class Tuple, std::size_t... I>
void append_python_tuple(std::string& out, const Tuple& t, std::index_sequence<I...>) {
    out += '(';
    std::size_t n = 0;
    ((out += (n++ ? ", " : ""), append_python(out, std::get<I>(t), true)), ...);
    if (sizeof...(I) == 1) out += ',';
    out += ')';
}

/// Appends str(value) (repr = false) or repr(value) (repr = true) to `out`.
template <class T>
void append_python(std::string& out, const T& value, bool repr) {
    static_assert(PythonStr<T>,
                  "retools: this argument type has no Python str() rendering for a cache key; "
                  "make it formattable with fmt (a fmt::formatter specialization or format_as)");
    if constexpr (std::is_same_v<T, bool>) {
        out += value ? "True" : "False";
    } else if constexpr (std::is_same_v<T, char>) {
        if (repr)
            append_python_string_repr(out, std::string_view(&value, 1));
        else
            out += value;
    } else if constexpr (StringLike<T>) {
        if constexpr (std::is_pointer_v<T>) {
            if (value == nullptr)
                throw ConfigurationError(
                    "retools: a null const char* has no Python str(); pass a string or std::nullopt for "
                    "None");
        }
        if (repr)
            append_python_string_repr(out, std::string_view(value));
        else
            out += std::string_view(value);
    } else if constexpr (std::is_integral_v<T>) {
        char buf[48];
        auto res = std::to_chars(buf, buf + sizeof buf, value);
        out.append(buf, static_cast<std::size_t>(res.ptr - buf));
    } else if constexpr (std::is_same_v<T, float>) {
        out += python_repr(value);
    } else if constexpr (std::is_floating_point_v<T>) {
        out += python_repr(static_cast<double>(value));
    } else if constexpr (std::is_same_v<T, std::nullptr_t> || std::is_same_v<T, std::nullopt_t>) {
        out += "None";
    } else if constexpr (is_optional<T>::value) {
        if (value)
            append_python(out, *value, repr);
        else
            out += "None";
    } else if constexpr (TupleLike<T>) {
        append_python_tuple(out, value, std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (MapLike<T>) {
        out += '{';
        bool first = true;
        for (const auto& [k, v] : value) {
            if (!first) out += ", ";
            first = false;
            append_python(out, k, true);
            out += ": ";
            append_python(out, v, true);
        }
        out += '}';
    } else if constexpr (SetLike<T>) {
        if (std::ranges::empty(value)) {
            out += "set()";
            return;
        }
        out += '{';
        bool first = true;
        for (const auto& element : value) {
            if (!first) out += ", ";
            first = false;
            append_python(out, element, true);
        }
        out += '}';
    } else if constexpr (PyRange<T>) {
        out += '[';
        bool first = true;
        for (const auto& element : value) {
            if (!first) out += ", ";
            first = false;
            append_python(out, element, true);
        }
        out += ']';
    } else {
        fmt::format_to(std::back_inserter(out), "{}", value);
    }
}

/// Python's str(value).
template <PythonStr T>
std::string python_str(const T& value) {
    std::string out;
    append_python(out, value, false);
    return out;
}

/// `" ".join(map(str, args))`, appended to `out`: the original's cache key.
template <class... Args>
void append_python_joined(std::string& out, const Args&... args) {
    std::size_t n = 0;
    ((out += (n++ ? " " : ""), append_python(out, args, false)), ...);
}

template <class... Args>
std::string python_joined(const Args&... args) {
    std::string out;
    append_python_joined(out, args...);
    return out;
}

}  // namespace retools::detail
