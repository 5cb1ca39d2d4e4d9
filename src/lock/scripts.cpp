#include "lock/scripts.hpp"

#include <string>
#include <string_view>

#include "generated/lua_scripts.hpp"

namespace retools::detail {

// The scripts' KEYS, ARGV and replies are described at the top of each file
// in src/lock/lua/.

namespace {
// Never destroyed: a lock held by a background computation (the cache's soft
// timeout) may still be renewed or released while the process exits.
const Script& immortal(std::string_view source) {
    return *new Script{std::string(source)};
}
}  // namespace

const Script& lock_acquire_script() {
    static const Script& script = immortal(lua::lock_acquire);
    return script;
}

const Script& lock_release_script() {
    static const Script& script = immortal(lua::lock_release);
    return script;
}

const Script& lock_acquire_many_script() {
    static const Script& script = immortal(lua::lock_acquire_many);
    return script;
}

const Script& lock_release_many_script() {
    static const Script& script = immortal(lua::lock_release_many);
    return script;
}

const Script& lock_extend_script() {
    static const Script& script = immortal(lua::lock_extend);
    return script;
}

const Script& limiter_acquire_script() {
    static const Script& script = immortal(lua::lock_limiter_acquire);
    return script;
}

const Script& limiter_extend_script() {
    static const Script& script = immortal(lua::lock_limiter_extend);
    return script;
}

const Script& limiter_release_script() {
    static const Script& script = immortal(lua::lock_limiter_release);
    return script;
}

const Script& rw_acquire_read_script() {
    static const Script& script = immortal(lua::lock_rw_acquire_read);
    return script;
}

const Script& rw_acquire_write_script() {
    static const Script& script = immortal(lua::lock_rw_acquire_write);
    return script;
}

const Script& rw_release_read_script() {
    static const Script& script = immortal(lua::lock_rw_release_read);
    return script;
}

const Script& rw_extend_read_script() {
    static const Script& script = immortal(lua::lock_rw_extend_read);
    return script;
}

const Script& rate_limiter_acquire_script() {
    static const Script& script = immortal(lua::lock_rate_limiter_acquire);
    return script;
}

}  // namespace retools::detail
