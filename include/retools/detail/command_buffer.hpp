#pragma once
// RESP encoding of commands: arguments go straight into one buffer that is
// written to the socket in a single call, however many commands it holds.

#include <charconv>
#include <concepts>
#include <cstddef>
#include <iterator>
#include <ranges>
#include <string>
#include <string_view>
#include <type_traits>

#include <retools/detail/concepts.hpp>
#include <retools/detail/python_repr.hpp>

namespace retools::detail {

template <class T>
concept IntegerArg = std::integral<std::remove_cvref_t<T>> && !std::same_as<std::remove_cvref_t<T>, bool> &&
                     !std::same_as<std::remove_cvref_t<T>, char>;

template <class T>
concept FloatArg = std::floating_point<std::remove_cvref_t<T>>;

template <class T>
concept ScalarArg = StringLike<T> || IntegerArg<T> || FloatArg<T>;

/// A range of scalars expands to one argument per element (`SADD key members...`).
template <class T>
concept RangeArg =
    !StringLike<T> && std::ranges::input_range<const T&> && ScalarArg<std::ranges::range_value_t<const T&>>;

template <class T>
concept CommandArg = ScalarArg<T> || RangeArg<T>;

class CommandBuffer {
public:
    template <class... Args>
    void add(const Args&... args) {
        static_assert(!(std::is_same_v<Args, std::nullptr_t> || ...),
                      "retools: nullptr is not a command argument (pass \"\" for an empty string)");
        static_assert((CommandArg<Args> && ...),
                      "retools: command arguments must be strings, integers, floating point "
                      "numbers or ranges of those (bool and char are rejected as ambiguous)");
        header((count(args) + ... + std::size_t{0}));
        (write(args), ...);
        ++commands_;
    }

    /// Appends already-encoded commands.
    void append_encoded(std::string_view resp, std::size_t commands) {
        data_.append(resp);
        commands_ += commands;
    }

    const std::string& data() const noexcept { return data_; }
    std::size_t commands() const noexcept { return commands_; }
    bool empty() const noexcept { return commands_ == 0; }
    void clear() noexcept {
        data_.clear();
        commands_ = 0;
    }
    void reserve(std::size_t bytes) { data_.reserve(bytes); }

private:
    template <class T>
    static std::size_t count(const T& arg) {
        if constexpr (RangeArg<T>) {
            if constexpr (std::ranges::sized_range<const T&>)
                return std::ranges::size(arg);
            else
                return static_cast<std::size_t>(std::ranges::distance(arg));
        } else {
            return 1;
        }
    }

    template <class T>
    void write(const T& arg) {
        if constexpr (RangeArg<T>) {
            for (const auto& element : arg) write(element);
        } else if constexpr (StringLike<T>) {
            bulk(std::string_view(arg));
        } else if constexpr (IntegerArg<T>) {
            char buf[24];
            auto res = std::to_chars(buf, buf + sizeof buf, arg);
            bulk(std::string_view(buf, static_cast<std::size_t>(res.ptr - buf)));
        } else {
            bulk(python_repr(static_cast<double>(arg)));
        }
    }

    void header(std::size_t argc) { prefixed('*', argc); }

    void bulk(std::string_view s) {
        prefixed('$', s.size());
        data_.append(s);
        data_.append("\r\n", 2);
    }

    void prefixed(char kind, std::size_t n) {
        char buf[24];
        buf[0] = kind;
        auto res = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
        *res.ptr++ = '\r';
        *res.ptr++ = '\n';
        data_.append(buf, static_cast<std::size_t>(res.ptr - buf));
    }

    std::string data_;
    std::size_t commands_ = 0;
};

}  // namespace retools::detail
