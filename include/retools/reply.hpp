#pragma once
// Reply: an owning, typed view of one Redis reply.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retools {

namespace detail {
struct ReplyAccess;  // the library's way in (src/client/reply_access.hpp)
}  // namespace detail

/// One reply from Redis, owning its memory. Copies are cheap (elements of an
/// array share the array's storage). A nil reply is "missing", not an error:
///
/// ```cpp
/// retools::Reply r = conn.command("GET", "some-key");
/// if (!r.is_nil()) use(r.as_string());
/// ```
///
/// Accessors throw `ReplyError` when the reply is a server error (with the
/// server's message) or is not of the requested type.
class Reply {
public:
    enum class Type { nil, integer, string, status, array, error };

    /// A nil reply.
    Reply() = default;

    Type type() const noexcept;
    bool is_nil() const noexcept { return type() == Type::nil; }
    bool is_integer() const noexcept { return type() == Type::integer; }
    /// Bulk or status string.
    bool is_string() const noexcept {
        auto t = type();
        return t == Type::string || t == Type::status;
    }
    bool is_status() const noexcept { return type() == Type::status; }
    bool is_array() const noexcept { return type() == Type::array; }
    bool is_error() const noexcept { return type() == Type::error; }

    long long as_integer() const;
    /// Bulk or status string, as bytes (binary safe).
    std::string as_string() const;
    /// Like as_string() but without a copy; valid while this Reply (or a copy) lives.
    std::string_view view() const;
    /// nil → nullopt, string → its bytes.
    std::optional<std::string> as_optional_string() const;
    /// An integer reply, or a string holding a float (`"1732492345.12"`, `"inf"`).
    double as_double() const;
    /// The elements of an array reply (a nil multi-bulk gives an empty vector).
    std::vector<Reply> as_array() const;

    /// Number of elements of an array reply (0 for nil).
    std::size_t size() const;
    /// Element `i` of an array reply; throws ReplyError when out of range.
    Reply operator[](std::size_t i) const;

    /// The server's message of an error reply (empty for other types).
    std::string_view error_message() const noexcept;
    /// Throws ReplyError if this is an error reply.
    const Reply& check() const;

private:
    friend struct detail::ReplyAccess;
    Reply(std::shared_ptr<const void> root, const void* node) : root_(std::move(root)), node_(node) {}
    [[noreturn]] void type_mismatch(std::string_view wanted) const;

    // The parsed reply tree (owned by root_) and this reply's node in it;
    // their type is the client library's, known only to src/.
    std::shared_ptr<const void> root_;
    const void* node_ = nullptr;
};

std::string_view to_string(Reply::Type type) noexcept;

}  // namespace retools
