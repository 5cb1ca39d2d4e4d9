#pragma once
// The type classifications shared by command arguments, Python str() keys and
// pickle: one definition each, so the three always agree.

#include <cstddef>
#include <optional>
#include <ranges>
#include <string_view>
#include <tuple>
#include <type_traits>

namespace retools::detail {

/// Text that converts to std::string_view (std::string, string_view, char
/// arrays, const char*). nullptr is not text: it would convert through
/// `const char*` and crash in strlen().
template <class T>
concept StringLike = std::is_convertible_v<const T&, std::string_view> &&
    !std::is_same_v<std::remove_cvref_t<T>, std::nullptr_t>;

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

/// std::tuple, std::pair and the like (std::array is a range, not one of these).
template <class T>
concept TupleLike = requires {
    std::tuple_size<T>::value;
}
&&!std::ranges::range<T>;

/// std::map, std::unordered_map and the like.
template <class T>
concept MapLike = std::ranges::input_range<const T&> && requires {
    typename T::key_type;
    typename T::mapped_type;
};

/// std::set, std::unordered_set and the like.
template <class T>
concept SetLike = std::ranges::input_range<const T&> && !MapLike<T> && requires {
    typename T::key_type;
};

}  // namespace retools::detail
