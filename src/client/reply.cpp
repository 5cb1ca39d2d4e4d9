#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <retools/errors.hpp>
#include <retools/reply.hpp>

#include "client/errors.hpp"
#include "client/reply_access.hpp"

namespace retools {

namespace {
const redisReply* tree(const void* node) noexcept {
    return static_cast<const redisReply*>(node);
}
}  // namespace

Reply detail::ReplyAccess::adopt(redisReply* reply) {
    if (reply == nullptr) return Reply{};
    std::shared_ptr<const void> root(
        reply, [](const void* r) { freeReplyObject(const_cast<redisReply*>(tree(r))); });
    return Reply{std::move(root), reply};
}

Reply detail::ReplyAccess::adopt_shared(std::shared_ptr<const void> owner, const redisReply* node) {
    return Reply{std::move(owner), node};
}

Reply::Type Reply::type() const noexcept {
    if (node_ == nullptr) return Type::nil;
    switch (tree(node_)->type) {
        case REDIS_REPLY_INTEGER:
            return Type::integer;
        case REDIS_REPLY_STRING:
            return Type::string;
        case REDIS_REPLY_STATUS:
            return Type::status;
        case REDIS_REPLY_ARRAY:
            return Type::array;
        case REDIS_REPLY_ERROR:
            return Type::error;
        default:
            return Type::nil;
    }
}

std::string_view to_string(Reply::Type type) noexcept {
    switch (type) {
        case Reply::Type::nil:
            return "nil";
        case Reply::Type::integer:
            return "integer";
        case Reply::Type::string:
            return "string";
        case Reply::Type::status:
            return "status";
        case Reply::Type::array:
            return "array";
        case Reply::Type::error:
            return "error";
    }
    return "unknown";
}

const Reply& Reply::check() const {
    if (is_error()) detail::throw_reply_error(*this);
    return *this;
}

void Reply::type_mismatch(std::string_view wanted) const {
    check();
    detail::throw_reply_type_error(wanted, to_string(type()));
}

long long Reply::as_integer() const {
    if (!is_integer()) type_mismatch("integer");
    return tree(node_)->integer;
}

std::string_view Reply::view() const {
    if (!is_string()) type_mismatch("string");
    return {tree(node_)->str, tree(node_)->len};
}

std::string Reply::as_string() const {
    return std::string(view());
}

std::optional<std::string> Reply::as_optional_string() const {
    if (is_nil()) return std::nullopt;
    return as_string();
}

double Reply::as_double() const {
    if (is_integer()) return static_cast<double>(tree(node_)->integer);
    std::string_view text = view();
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc{} && end == text.data() + text.size()) return value;
    // from_chars rejects the spellings Redis and Python use for infinities.
    if (text == "inf" || text == "+inf" || text == "Infinity") return INFINITY;
    if (text == "-inf" || text == "-Infinity") return -INFINITY;
    detail::throw_reply_error(fmt::format("expected a number, got {:?}", text));
}

std::vector<Reply> Reply::as_array() const {
    if (is_nil()) return {};
    if (!is_array()) type_mismatch("array");
    std::vector<Reply> out;
    out.reserve(tree(node_)->elements);
    for (std::size_t i = 0; i < tree(node_)->elements; ++i)
        out.push_back(Reply{root_, tree(node_)->element[i]});
    return out;
}

std::size_t Reply::size() const {
    if (is_nil()) return 0;
    if (!is_array()) type_mismatch("array");
    return tree(node_)->elements;
}

Reply Reply::operator[](std::size_t i) const {
    if (i >= size())
        detail::throw_reply_error(fmt::format("reply index {} out of range (size {})", i, size()));
    return Reply{root_, tree(node_)->element[i]};
}

std::string_view Reply::error_message() const noexcept {
    if (!is_error()) return {};
    return {tree(node_)->str, tree(node_)->len};
}

}  // namespace retools
