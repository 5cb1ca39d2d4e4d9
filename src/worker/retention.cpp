#include "worker/retention.hpp"

#include <string>

#include <retools/detail/python_repr.hpp>
#include <retools/script.hpp>

#include "generated/lua_scripts.hpp"
#include "queue/keys.hpp"
#include "util/clock.hpp"

namespace retools::detail {

std::size_t trim_failed(const Connection& conn, const FailedRetention& retention) {
    if (retention.max_entries == 0 && retention.max_age.count() <= 0) return 0;
    static const Script script{std::string(lua::worker_trim_failed)};
    const long long removed =
        script(conn, {queue_keys::failed}, static_cast<long long>(retention.max_entries),
               static_cast<long long>(retention.max_age.count()), python_repr(unix_now()))
            .as_integer();
    // A key of its own (another slot on a Cluster): a command of its own.
    if (removed > 0) conn.command("INCRBY", queue_keys::failed_trimmed, removed);
    return static_cast<std::size_t>(removed);
}

}  // namespace retools::detail
