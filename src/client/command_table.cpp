#include "client/command_table.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>
#include <system_error>

namespace retools::detail {
namespace {

struct NamedInfo {
    std::string_view name;
    CommandInfo info;
};

// Sorted by name (binary search). Commands not listed route by their first
// argument, which a MOVED reply corrects if it is not the key. A command
// without read_only is treated as a write (master only, sent once), which is
// always safe: the flag is set only where retools relies on it.
constexpr NamedInfo kCommands[] = {
    {"APPEND", {.keys = KeySpec::first}},
    {"ASKING", {.keys = KeySpec::none, .own_link = true}},
    {"AUTH", {.keys = KeySpec::none, .secret = true, .own_link = true}},
    {"BGREWRITEAOF", {.keys = KeySpec::none}},
    {"BGSAVE", {.keys = KeySpec::none}},
    {"BITCOUNT", {.keys = KeySpec::first}},
    {"BLMOVE", {.keys = KeySpec::first_two, .blocking = true}},
    {"BLPOP", {.keys = KeySpec::all_but_last, .blocking = true}},
    {"BRPOP", {.keys = KeySpec::all_but_last, .blocking = true}},
    {"BRPOPLPUSH", {.keys = KeySpec::first_two, .blocking = true}},
    {"BZPOPMAX", {.keys = KeySpec::all_but_last, .blocking = true}},
    {"BZPOPMIN", {.keys = KeySpec::all_but_last, .blocking = true}},
    {"CLIENT", {.keys = KeySpec::none, .own_link = true}},
    {"CLUSTER", {.keys = KeySpec::none}},
    {"COMMAND", {.keys = KeySpec::none}},
    {"CONFIG", {.keys = KeySpec::none}},
    {"COPY", {.keys = KeySpec::first_two}},
    {"DBSIZE", {.keys = KeySpec::none, .read_only = true}},
    {"DEBUG", {.keys = KeySpec::none}},
    {"DECR", {.keys = KeySpec::first}},
    {"DECRBY", {.keys = KeySpec::first}},
    {"DEL", {.keys = KeySpec::all}},
    {"DISCARD", {.keys = KeySpec::none, .own_link = true}},
    {"DUMP", {.keys = KeySpec::first}},
    {"ECHO", {.keys = KeySpec::none, .read_only = true}},
    {"EVAL", {.keys = KeySpec::numkeys}},
    {"EVALSHA", {.keys = KeySpec::numkeys}},
    {"EVALSHA_RO", {.keys = KeySpec::numkeys}},
    {"EVAL_RO", {.keys = KeySpec::numkeys}},
    {"EXEC", {.keys = KeySpec::none, .own_link = true}},
    {"EXISTS", {.keys = KeySpec::all, .read_only = true}},
    {"EXPIRE", {.keys = KeySpec::first}},
    {"EXPIREAT", {.keys = KeySpec::first}},
    {"EXPIRETIME", {.keys = KeySpec::first, .read_only = true}},
    {"FCALL", {.keys = KeySpec::numkeys}},
    {"FCALL_RO", {.keys = KeySpec::numkeys}},
    {"FLUSHALL", {.keys = KeySpec::none}},
    {"FLUSHDB", {.keys = KeySpec::none}},
    {"FUNCTION", {.keys = KeySpec::none}},
    {"GET", {.keys = KeySpec::first, .read_only = true}},
    {"GETDEL", {.keys = KeySpec::first}},
    {"GETEX", {.keys = KeySpec::first}},
    {"GETRANGE", {.keys = KeySpec::first, .read_only = true}},
    {"GETSET", {.keys = KeySpec::first}},
    {"HDEL", {.keys = KeySpec::first}},
    {"HELLO", {.keys = KeySpec::none, .secret = true, .own_link = true}},
    {"HEXISTS", {.keys = KeySpec::first, .read_only = true}},
    {"HGET", {.keys = KeySpec::first, .read_only = true}},
    {"HGETALL", {.keys = KeySpec::first, .read_only = true}},
    {"HINCRBY", {.keys = KeySpec::first}},
    {"HINCRBYFLOAT", {.keys = KeySpec::first}},
    {"HKEYS", {.keys = KeySpec::first, .read_only = true}},
    {"HLEN", {.keys = KeySpec::first, .read_only = true}},
    {"HMGET", {.keys = KeySpec::first, .read_only = true}},
    {"HMSET", {.keys = KeySpec::first}},
    {"HSCAN", {.keys = KeySpec::first, .read_only = true}},
    {"HSET", {.keys = KeySpec::first}},
    {"HSETNX", {.keys = KeySpec::first}},
    {"HSTRLEN", {.keys = KeySpec::first, .read_only = true}},
    {"HVALS", {.keys = KeySpec::first, .read_only = true}},
    {"INCR", {.keys = KeySpec::first}},
    {"INCRBY", {.keys = KeySpec::first}},
    {"INCRBYFLOAT", {.keys = KeySpec::first}},
    {"INFO", {.keys = KeySpec::none, .read_only = true}},
    {"KEYS", {.keys = KeySpec::none, .read_only = true}},
    {"LASTSAVE", {.keys = KeySpec::none}},
    {"LATENCY", {.keys = KeySpec::none}},
    {"LINDEX", {.keys = KeySpec::first, .read_only = true}},
    {"LINSERT", {.keys = KeySpec::first}},
    {"LLEN", {.keys = KeySpec::first, .read_only = true}},
    {"LMOVE", {.keys = KeySpec::first_two}},
    {"LPOP", {.keys = KeySpec::first}},
    {"LPOS", {.keys = KeySpec::first, .read_only = true}},
    {"LPUSH", {.keys = KeySpec::first}},
    {"LPUSHX", {.keys = KeySpec::first}},
    {"LRANGE", {.keys = KeySpec::first, .read_only = true}},
    {"LREM", {.keys = KeySpec::first}},
    {"LSET", {.keys = KeySpec::first}},
    {"LTRIM", {.keys = KeySpec::first}},
    {"MEMORY", {.keys = KeySpec::second}},
    {"MGET", {.keys = KeySpec::all, .read_only = true}},
    {"MONITOR", {.keys = KeySpec::none, .own_link = true}},
    {"MSET", {.keys = KeySpec::pairs}},
    {"MSETNX", {.keys = KeySpec::pairs}},
    {"MULTI", {.keys = KeySpec::none, .own_link = true}},
    {"OBJECT", {.keys = KeySpec::second}},
    {"PERSIST", {.keys = KeySpec::first}},
    {"PEXPIRE", {.keys = KeySpec::first}},
    {"PEXPIREAT", {.keys = KeySpec::first}},
    {"PEXPIRETIME", {.keys = KeySpec::first, .read_only = true}},
    {"PFADD", {.keys = KeySpec::first}},
    {"PFCOUNT", {.keys = KeySpec::all}},
    {"PING", {.keys = KeySpec::none, .read_only = true}},
    {"PSETEX", {.keys = KeySpec::first}},
    {"PSUBSCRIBE", {.keys = KeySpec::none, .own_link = true}},
    {"PSYNC", {.keys = KeySpec::none, .own_link = true}},
    {"PTTL", {.keys = KeySpec::first, .read_only = true}},
    {"PUBLISH", {.keys = KeySpec::none}},
    {"PUNSUBSCRIBE", {.keys = KeySpec::none, .own_link = true}},
    {"QUIT", {.keys = KeySpec::none, .own_link = true}},
    {"RANDOMKEY", {.keys = KeySpec::none}},
    {"READONLY", {.keys = KeySpec::none, .own_link = true}},
    {"READWRITE", {.keys = KeySpec::none, .own_link = true}},
    {"RENAME", {.keys = KeySpec::first_two}},
    {"RENAMENX", {.keys = KeySpec::first_two}},
    {"RESET", {.keys = KeySpec::none, .own_link = true}},
    {"RESTORE", {.keys = KeySpec::first}},
    {"ROLE", {.keys = KeySpec::none, .read_only = true}},
    {"RPOP", {.keys = KeySpec::first}},
    {"RPOPLPUSH", {.keys = KeySpec::first_two}},
    {"RPUSH", {.keys = KeySpec::first}},
    {"RPUSHX", {.keys = KeySpec::first}},
    {"SADD", {.keys = KeySpec::first}},
    {"SAVE", {.keys = KeySpec::none}},
    {"SCAN", {.keys = KeySpec::none, .read_only = true}},
    {"SCARD", {.keys = KeySpec::first, .read_only = true}},
    {"SCRIPT", {.keys = KeySpec::none}},
    {"SDIFF", {.keys = KeySpec::all}},
    {"SDIFFSTORE", {.keys = KeySpec::all}},
    {"SELECT", {.keys = KeySpec::none, .own_link = true}},
    {"SET", {.keys = KeySpec::first}},
    {"SETEX", {.keys = KeySpec::first}},
    {"SETNX", {.keys = KeySpec::first}},
    {"SETRANGE", {.keys = KeySpec::first}},
    {"SINTER", {.keys = KeySpec::all}},
    {"SINTERSTORE", {.keys = KeySpec::all}},
    {"SISMEMBER", {.keys = KeySpec::first, .read_only = true}},
    {"SLOWLOG", {.keys = KeySpec::none}},
    {"SMEMBERS", {.keys = KeySpec::first, .read_only = true}},
    {"SMISMEMBER", {.keys = KeySpec::first, .read_only = true}},
    {"SMOVE", {.keys = KeySpec::first_two}},
    {"SORT", {.keys = KeySpec::first}},
    {"SPOP", {.keys = KeySpec::first}},
    {"SRANDMEMBER", {.keys = KeySpec::first}},
    {"SREM", {.keys = KeySpec::first}},
    {"SSCAN", {.keys = KeySpec::first, .read_only = true}},
    {"SSUBSCRIBE", {.keys = KeySpec::all, .own_link = true}},
    {"STRLEN", {.keys = KeySpec::first, .read_only = true}},
    {"SUBSCRIBE", {.keys = KeySpec::none, .own_link = true}},
    {"SUNION", {.keys = KeySpec::all}},
    {"SUNIONSTORE", {.keys = KeySpec::all}},
    {"SUNSUBSCRIBE", {.keys = KeySpec::all, .own_link = true}},
    {"SYNC", {.keys = KeySpec::none, .own_link = true}},
    {"TIME", {.keys = KeySpec::none, .read_only = true}},
    {"TOUCH", {.keys = KeySpec::all}},
    {"TTL", {.keys = KeySpec::first, .read_only = true}},
    {"TYPE", {.keys = KeySpec::first, .read_only = true}},
    {"UNLINK", {.keys = KeySpec::all}},
    {"UNSUBSCRIBE", {.keys = KeySpec::none, .own_link = true}},
    {"UNWATCH", {.keys = KeySpec::none, .own_link = true}},
    {"WAIT", {.keys = KeySpec::none, .blocking = true}},
    {"WAITAOF", {.keys = KeySpec::none, .blocking = true}},
    {"WATCH", {.keys = KeySpec::all, .own_link = true}},
    {"XACK", {.keys = KeySpec::first}},
    {"XADD", {.keys = KeySpec::first}},
    {"XCLAIM", {.keys = KeySpec::first}},
    {"XDEL", {.keys = KeySpec::first}},
    {"XGROUP", {.keys = KeySpec::second}},
    {"XINFO", {.keys = KeySpec::second}},
    {"XLEN", {.keys = KeySpec::first}},
    {"XPENDING", {.keys = KeySpec::first}},
    {"XRANGE", {.keys = KeySpec::first}},
    {"XREAD", {.keys = KeySpec::streams, .blocking = true}},
    {"XREADGROUP", {.keys = KeySpec::streams, .blocking = true}},
    {"XREVRANGE", {.keys = KeySpec::first}},
    {"XTRIM", {.keys = KeySpec::first}},
    {"ZADD", {.keys = KeySpec::first}},
    {"ZCARD", {.keys = KeySpec::first, .read_only = true}},
    {"ZCOUNT", {.keys = KeySpec::first, .read_only = true}},
    {"ZINCRBY", {.keys = KeySpec::first}},
    {"ZINTERSTORE", {.keys = KeySpec::dest_numkeys}},
    {"ZMSCORE", {.keys = KeySpec::first, .read_only = true}},
    {"ZPOPMAX", {.keys = KeySpec::first}},
    {"ZPOPMIN", {.keys = KeySpec::first}},
    {"ZRANGE", {.keys = KeySpec::first, .read_only = true}},
    {"ZRANGEBYLEX", {.keys = KeySpec::first}},
    {"ZRANGEBYSCORE", {.keys = KeySpec::first, .read_only = true}},
    {"ZRANK", {.keys = KeySpec::first, .read_only = true}},
    {"ZREM", {.keys = KeySpec::first}},
    {"ZREMRANGEBYLEX", {.keys = KeySpec::first}},
    {"ZREMRANGEBYRANK", {.keys = KeySpec::first}},
    {"ZREMRANGEBYSCORE", {.keys = KeySpec::first}},
    {"ZREVRANGE", {.keys = KeySpec::first, .read_only = true}},
    {"ZREVRANGEBYSCORE", {.keys = KeySpec::first, .read_only = true}},
    {"ZREVRANK", {.keys = KeySpec::first, .read_only = true}},
    {"ZSCAN", {.keys = KeySpec::first, .read_only = true}},
    {"ZSCORE", {.keys = KeySpec::first, .read_only = true}},
    {"ZUNIONSTORE", {.keys = KeySpec::dest_numkeys}},
};

static_assert(std::is_sorted(std::begin(kCommands), std::end(kCommands),
                             [](const NamedInfo& a, const NamedInfo& b) { return a.name < b.name; }));

}  // namespace

CommandInfo command_info(std::string_view name) noexcept {
    char upper[24];
    if (name.size() > sizeof upper) return {};
    for (std::size_t i = 0; i < name.size(); ++i)
        upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(name[i])));
    const std::string_view key(upper, name.size());
    auto it = std::lower_bound(std::begin(kCommands), std::end(kCommands), key,
                               [](const NamedInfo& c, std::string_view k) { return c.name < k; });
    return it != std::end(kCommands) && it->name == key ? it->info : CommandInfo{};
}

bool read_only_command(std::string_view name) noexcept {
    return command_info(name).read_only;
}

bool read_only_request(std::string_view resp) {
    bool any = false, all = true;
    bool well_formed =
        for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view) {
            any = true;
            all = read_only_command(args[0]);
            return all;
        });
    return well_formed && any && all;
}

bool needs_own_link(std::string_view resp) noexcept {
    // Reads "<marker><n>\r\n" at the front of resp; -1 when malformed.
    auto number = [&](char marker) -> long long {
        if (resp.size() < 4 || resp.front() != marker) return -1;
        long long n = -1;
        auto [end, ec] = std::from_chars(resp.data() + 1, resp.data() + resp.size(), n);
        const auto used = static_cast<std::size_t>(end - resp.data());
        if (ec != std::errc{} || resp.size() < used + 2 || resp.substr(used, 2) != "\r\n") return -1;
        resp.remove_prefix(used + 2);
        return n;
    };
    while (!resp.empty()) {
        long long args = number('*');
        if (args <= 0) return true;
        for (long long i = 0; i < args; ++i) {
            long long len = number('$');
            if (len < 0 || resp.size() < static_cast<std::size_t>(len) + 2) return true;
            if (i == 0) {
                const CommandInfo info = command_info(resp.substr(0, static_cast<std::size_t>(len)));
                if (info.blocking || info.own_link) return true;
            }
            resp.remove_prefix(static_cast<std::size_t>(len) + 2);
        }
    }
    return false;
}

std::size_t count_at(const std::vector<std::string_view>& args, std::size_t i) noexcept {
    if (i >= args.size()) return 0;
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(args[i].data(), args[i].data() + args[i].size(), n);
    return ec == std::errc{} ? n : 0;
}

std::vector<std::string_view> command_keys(const std::vector<std::string_view>& args) {
    std::vector<std::string_view> keys;
    visit_keys(args, [&](std::string_view k) { keys.push_back(k); });
    return keys;
}

}  // namespace retools::detail
