#pragma once
// What retools knows about Redis commands, in one table: where a command's
// keys lie (Cluster routing), whether it only reads (a replica may serve it;
// sending it again after a failover cannot change data), whether the server
// may hold its reply, and whether its arguments may carry a password. A
// command not in the table has its key first and may write.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "client/resp_commands.hpp"

namespace retools::detail {

/// How the keys of a command lie among its arguments.
enum class KeySpec : std::uint8_t {
    none,          // PING, INFO, CLUSTER ...
    first,         // GET key ...
    second,        // OBJECT ENCODING key, MEMORY USAGE key, XGROUP CREATE key ...
    first_two,     // RPOPLPUSH src dst, LMOVE, SMOVE, RENAME, COPY
    all,           // DEL k1 k2 ..., MGET, EXISTS, SINTER, WATCH
    pairs,         // MSET k1 v1 k2 v2 ...
    all_but_last,  // BLPOP k1 k2 timeout, BZPOPMIN
    numkeys,       // EVAL script numkeys k1 k2 ... args (numkeys at 2)
    dest_numkeys,  // ZUNIONSTORE dest numkeys k1 k2 ...
    streams,       // XREAD ... STREAMS k1 k2 id1 id2
};

/// One command's entry. The defaults describe a command the table does not know.
struct CommandInfo {
    /// Where its keys are. Default: the first argument.
    KeySpec keys = KeySpec::first;
    /// Never writes: a replica may answer it, and it may be sent again after a
    /// failover. Default false: it goes to the master and is sent once.
    bool read_only = false;
    /// The server may hold the reply (BLPOP ...; XREAD and XREADGROUP with
    /// BLOCK). Default false.
    bool blocking = false;
    /// Its arguments may carry a password (AUTH, HELLO): error messages name
    /// only the command. Default false.
    bool secret = false;
    /// Changes or depends on the state of its connection (SELECT, WATCH,
    /// MULTI, CLIENT, SUBSCRIBE ...): a multiplexed Connection sends it on a
    /// connection of its own rather than the shared one. Default false.
    bool own_link = false;
};

/// The entry of the command `name` (any case); CommandInfo{} when unknown.
CommandInfo command_info(std::string_view name) noexcept;

/// True when the command `name` (any case) only reads: GET, HGETALL, ...
bool read_only_command(std::string_view name) noexcept;
/// True when every command of the RESP `request` only reads (GET, HGETALL,
/// LRANGE ...): sending it again cannot change anything.
bool read_only_request(std::string_view request);

/// True when the RESP `request` may not share a multiplexed connection:
/// it holds a blocking or an own_link command (see CommandInfo), or it is
/// malformed. Reads only each command's name.
bool needs_own_link(std::string_view request) noexcept;

/// The count in argument `i` (numkeys), 0 when missing or not a number.
std::size_t count_at(const std::vector<std::string_view>& args, std::size_t i) noexcept;

/// Calls `key(k)` for each key of the command `args`, in order; allocates nothing.
template <class Key>
void visit_keys(const std::vector<std::string_view>& args, Key&& key) {
    if (args.size() < 2) return;
    const std::size_t n = args.size();
    switch (command_info(args[0]).keys) {
        case KeySpec::none:
            break;
        case KeySpec::first:
            key(args[1]);
            break;
        case KeySpec::second:
            if (n > 2) key(args[2]);
            break;
        case KeySpec::first_two:
            key(args[1]);
            if (n > 2) key(args[2]);
            break;
        case KeySpec::all:
            for (std::size_t i = 1; i < n; ++i) key(args[i]);
            break;
        case KeySpec::pairs:
            for (std::size_t i = 1; i < n; i += 2) key(args[i]);
            break;
        case KeySpec::all_but_last:
            for (std::size_t i = 1; i + 1 < n; ++i) key(args[i]);
            break;
        case KeySpec::numkeys:
            for (std::size_t i = 0, count = count_at(args, 2); i < count && 3 + i < n; ++i)
                key(args[3 + i]);
            break;
        case KeySpec::dest_numkeys:
            key(args[1]);
            for (std::size_t i = 0, count = count_at(args, 2); i < count && 3 + i < n; ++i)
                key(args[3 + i]);
            break;
        case KeySpec::streams:
            for (std::size_t i = 1; i < n; ++i) {
                if (!iequals(args[i], "STREAMS")) continue;
                const std::size_t half = (n - i - 1) / 2;
                for (std::size_t k = 0; k < half; ++k) key(args[i + 1 + k]);
                break;
            }
            break;
    }
}

/// The keys of a command, as far as retools knows its arguments (the first
/// key for most; every key for DEL, MGET, EVALSHA ...). Unknown commands: the
/// first argument after the name. Keyless commands (PING, INFO ...): none.
std::vector<std::string_view> command_keys(const std::vector<std::string_view>& args);

}  // namespace retools::detail
