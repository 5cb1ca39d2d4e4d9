#pragma once
// Signature deduction for cache_region(): the result and argument types of
// function pointers, member function pointers and functors.

#include <type_traits>

namespace retools::detail {

template <class... T>
struct type_list {};

template <class T>
struct callable_traits : callable_traits<decltype(&T::operator())> {
    using self = type_list<>;  // a functor's own object is not an argument
};

#define RETOOLS_DETAIL_FN_TRAITS(NOEXCEPT)                  \
    template <class R, class... A>                          \
    struct callable_traits<R (*)(A...) NOEXCEPT> {          \
        using result = R;                                   \
        using self = type_list<>;                           \
        using args = type_list<A...>;                       \
    };                                                      \
    template <class R, class C, class... A>                 \
    struct callable_traits<R (C::*)(A...) NOEXCEPT> {       \
        using result = R;                                   \
        using self = type_list<C&>;                         \
        using args = type_list<A...>;                       \
    };                                                      \
    template <class R, class C, class... A>                 \
    struct callable_traits<R (C::*)(A...) const NOEXCEPT> { \
        using result = R;                                   \
        using self = type_list<const C&>;                   \
        using args = type_list<A...>;                       \
    };
RETOOLS_DETAIL_FN_TRAITS()
RETOOLS_DETAIL_FN_TRAITS(noexcept)
#undef RETOOLS_DETAIL_FN_TRAITS

template <class T>
struct signature_traits;
template <class R, class... A>
struct signature_traits<R(A...)> {
    using result = R;
    using self = type_list<>;
    using args = type_list<A...>;
};

template <class T>
concept HasCallOperator = requires {
    &T::operator();
};

/// Function pointers, member function pointers and functors with one non-template operator().
template <class F>
concept DeducibleSignature = (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
                             std::is_member_function_pointer_v<F> || HasCallOperator<F>;

}  // namespace retools::detail
