#include <retools/script.hpp>

#include "util/sha1.hpp"

namespace retools {

Script::Script(std::string source) : source_(std::move(source)), sha_(detail::sha1_hex(source_)) {}

bool Script::is_noscript(const Reply& reply) noexcept {
    return reply.is_error() && reply.error_message().starts_with("NOSCRIPT");
}

}  // namespace retools
