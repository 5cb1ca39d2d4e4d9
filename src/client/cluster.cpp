#include "client/cluster.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>
#include <set>
#include <thread>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/connection_impl.hpp"
#include "client/errors.hpp"
#include "client/resp_commands.hpp"
#include "client/sentinel.hpp"

namespace retools::detail {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kCrcTable = [] {
    std::array<std::uint16_t, 256> table{};
    for (unsigned i = 0; i < 256; ++i) {
        auto crc = static_cast<std::uint16_t>(i << 8);
        for (int bit = 0; bit < 8; ++bit)
            crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
        table[i] = crc;
    }
    return table;
}();

// How the keys of a command lie among its arguments.
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

struct NamedSpec {
    std::string_view name;
    KeySpec spec;
};

// Sorted by name (binary search). Commands not listed route by their first
// argument, which a MOVED reply corrects if it is not the key.
constexpr NamedSpec kSpecs[] = {
    {"APPEND", KeySpec::first},
    {"ASKING", KeySpec::none},
    {"AUTH", KeySpec::none},
    {"BGREWRITEAOF", KeySpec::none},
    {"BGSAVE", KeySpec::none},
    {"BITCOUNT", KeySpec::first},
    {"BLMOVE", KeySpec::first_two},
    {"BLPOP", KeySpec::all_but_last},
    {"BRPOP", KeySpec::all_but_last},
    {"BRPOPLPUSH", KeySpec::first_two},
    {"BZPOPMAX", KeySpec::all_but_last},
    {"BZPOPMIN", KeySpec::all_but_last},
    {"CLIENT", KeySpec::none},
    {"CLUSTER", KeySpec::none},
    {"COMMAND", KeySpec::none},
    {"CONFIG", KeySpec::none},
    {"COPY", KeySpec::first_two},
    {"DBSIZE", KeySpec::none},
    {"DEBUG", KeySpec::none},
    {"DECR", KeySpec::first},
    {"DECRBY", KeySpec::first},
    {"DEL", KeySpec::all},
    {"DISCARD", KeySpec::none},
    {"DUMP", KeySpec::first},
    {"ECHO", KeySpec::none},
    {"EVAL", KeySpec::numkeys},
    {"EVALSHA", KeySpec::numkeys},
    {"EVALSHA_RO", KeySpec::numkeys},
    {"EVAL_RO", KeySpec::numkeys},
    {"EXEC", KeySpec::none},
    {"EXISTS", KeySpec::all},
    {"EXPIRE", KeySpec::first},
    {"EXPIREAT", KeySpec::first},
    {"FCALL", KeySpec::numkeys},
    {"FCALL_RO", KeySpec::numkeys},
    {"FLUSHALL", KeySpec::none},
    {"FLUSHDB", KeySpec::none},
    {"FUNCTION", KeySpec::none},
    {"GET", KeySpec::first},
    {"GETDEL", KeySpec::first},
    {"GETEX", KeySpec::first},
    {"GETRANGE", KeySpec::first},
    {"GETSET", KeySpec::first},
    {"HDEL", KeySpec::first},
    {"HELLO", KeySpec::none},
    {"HEXISTS", KeySpec::first},
    {"HGET", KeySpec::first},
    {"HGETALL", KeySpec::first},
    {"HINCRBY", KeySpec::first},
    {"HINCRBYFLOAT", KeySpec::first},
    {"HKEYS", KeySpec::first},
    {"HLEN", KeySpec::first},
    {"HMGET", KeySpec::first},
    {"HMSET", KeySpec::first},
    {"HSCAN", KeySpec::first},
    {"HSET", KeySpec::first},
    {"HSETNX", KeySpec::first},
    {"HVALS", KeySpec::first},
    {"INCR", KeySpec::first},
    {"INCRBY", KeySpec::first},
    {"INCRBYFLOAT", KeySpec::first},
    {"INFO", KeySpec::none},
    {"KEYS", KeySpec::none},
    {"LASTSAVE", KeySpec::none},
    {"LATENCY", KeySpec::none},
    {"LINDEX", KeySpec::first},
    {"LINSERT", KeySpec::first},
    {"LLEN", KeySpec::first},
    {"LMOVE", KeySpec::first_two},
    {"LPOP", KeySpec::first},
    {"LPOS", KeySpec::first},
    {"LPUSH", KeySpec::first},
    {"LPUSHX", KeySpec::first},
    {"LRANGE", KeySpec::first},
    {"LREM", KeySpec::first},
    {"LSET", KeySpec::first},
    {"LTRIM", KeySpec::first},
    {"MEMORY", KeySpec::second},
    {"MGET", KeySpec::all},
    {"MSET", KeySpec::pairs},
    {"MSETNX", KeySpec::pairs},
    {"MULTI", KeySpec::none},
    {"OBJECT", KeySpec::second},
    {"PERSIST", KeySpec::first},
    {"PEXPIRE", KeySpec::first},
    {"PEXPIREAT", KeySpec::first},
    {"PFADD", KeySpec::first},
    {"PFCOUNT", KeySpec::all},
    {"PING", KeySpec::none},
    {"PSETEX", KeySpec::first},
    {"PTTL", KeySpec::first},
    {"PUBLISH", KeySpec::none},
    {"RANDOMKEY", KeySpec::none},
    {"READONLY", KeySpec::none},
    {"READWRITE", KeySpec::none},
    {"RENAME", KeySpec::first_two},
    {"RENAMENX", KeySpec::first_two},
    {"RESTORE", KeySpec::first},
    {"ROLE", KeySpec::none},
    {"RPOP", KeySpec::first},
    {"RPOPLPUSH", KeySpec::first_two},
    {"RPUSH", KeySpec::first},
    {"RPUSHX", KeySpec::first},
    {"SADD", KeySpec::first},
    {"SAVE", KeySpec::none},
    {"SCAN", KeySpec::none},
    {"SCARD", KeySpec::first},
    {"SCRIPT", KeySpec::none},
    {"SDIFF", KeySpec::all},
    {"SDIFFSTORE", KeySpec::all},
    {"SELECT", KeySpec::none},
    {"SET", KeySpec::first},
    {"SETEX", KeySpec::first},
    {"SETNX", KeySpec::first},
    {"SETRANGE", KeySpec::first},
    {"SINTER", KeySpec::all},
    {"SINTERSTORE", KeySpec::all},
    {"SISMEMBER", KeySpec::first},
    {"SLOWLOG", KeySpec::none},
    {"SMEMBERS", KeySpec::first},
    {"SMISMEMBER", KeySpec::first},
    {"SMOVE", KeySpec::first_two},
    {"SORT", KeySpec::first},
    {"SPOP", KeySpec::first},
    {"SRANDMEMBER", KeySpec::first},
    {"SREM", KeySpec::first},
    {"SSCAN", KeySpec::first},
    {"STRLEN", KeySpec::first},
    {"SUNION", KeySpec::all},
    {"SUNIONSTORE", KeySpec::all},
    {"TIME", KeySpec::none},
    {"TOUCH", KeySpec::all},
    {"TTL", KeySpec::first},
    {"TYPE", KeySpec::first},
    {"UNLINK", KeySpec::all},
    {"UNWATCH", KeySpec::none},
    {"WAIT", KeySpec::none},
    {"WATCH", KeySpec::all},
    {"XACK", KeySpec::first},
    {"XADD", KeySpec::first},
    {"XCLAIM", KeySpec::first},
    {"XDEL", KeySpec::first},
    {"XGROUP", KeySpec::second},
    {"XINFO", KeySpec::second},
    {"XLEN", KeySpec::first},
    {"XPENDING", KeySpec::first},
    {"XRANGE", KeySpec::first},
    {"XREAD", KeySpec::streams},
    {"XREADGROUP", KeySpec::streams},
    {"XREVRANGE", KeySpec::first},
    {"XTRIM", KeySpec::first},
    {"ZADD", KeySpec::first},
    {"ZCARD", KeySpec::first},
    {"ZCOUNT", KeySpec::first},
    {"ZINCRBY", KeySpec::first},
    {"ZINTERSTORE", KeySpec::dest_numkeys},
    {"ZMSCORE", KeySpec::first},
    {"ZPOPMAX", KeySpec::first},
    {"ZPOPMIN", KeySpec::first},
    {"ZRANGE", KeySpec::first},
    {"ZRANGEBYLEX", KeySpec::first},
    {"ZRANGEBYSCORE", KeySpec::first},
    {"ZRANK", KeySpec::first},
    {"ZREM", KeySpec::first},
    {"ZREMRANGEBYLEX", KeySpec::first},
    {"ZREMRANGEBYRANK", KeySpec::first},
    {"ZREMRANGEBYSCORE", KeySpec::first},
    {"ZREVRANGE", KeySpec::first},
    {"ZREVRANGEBYSCORE", KeySpec::first},
    {"ZREVRANK", KeySpec::first},
    {"ZSCAN", KeySpec::first},
    {"ZSCORE", KeySpec::first},
    {"ZUNIONSTORE", KeySpec::dest_numkeys},
};

static_assert(std::is_sorted(std::begin(kSpecs), std::end(kSpecs),
                             [](const NamedSpec& a, const NamedSpec& b) { return a.name < b.name; }));

KeySpec spec_of(std::string_view name) {
    char upper[24];
    if (name.size() > sizeof upper) return KeySpec::first;
    for (std::size_t i = 0; i < name.size(); ++i)
        upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(name[i])));
    std::string_view key(upper, name.size());
    auto it = std::lower_bound(std::begin(kSpecs), std::end(kSpecs), key,
                               [](const NamedSpec& s, std::string_view k) { return s.name < k; });
    return it != std::end(kSpecs) && it->name == key ? it->spec : KeySpec::first;
}

std::size_t count_at(const std::vector<std::string_view>& args, std::size_t i) {
    if (i >= args.size()) return 0;
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(args[i].data(), args[i].data() + args[i].size(), n);
    return ec == std::errc{} ? n : 0;
}

std::string text(const Endpoint& e) {
    if (e.host.find(':') != std::string::npos) return fmt::format("[{}]:{}", e.host, e.port);
    return fmt::format("{}:{}", e.host, e.port);
}

// `MOVED 3999 127.0.0.1:6381` / `ASK ...`: the slot and the node. An empty
// host (a node that does not know its address) means the node that answered.
std::optional<std::pair<std::uint16_t, Endpoint>> redirection(std::string_view message,
                                                              const Endpoint& from) {
    auto space = message.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    std::string_view rest = message.substr(space + 1);
    auto space2 = rest.find(' ');
    if (space2 == std::string_view::npos) return std::nullopt;
    unsigned slot = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + space2, slot);
    if (ec != std::errc{} || slot >= kClusterSlots) return std::nullopt;
    std::string_view address = rest.substr(space2 + 1);
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    int port = 0;
    auto [pend, pec] = std::from_chars(address.data() + colon + 1, address.data() + address.size(), port);
    if (pec != std::errc{} || port <= 0 || port > 65535) return std::nullopt;
    std::string host(address.substr(0, colon));
    if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty()) host = from.host;
    return std::pair{static_cast<std::uint16_t>(slot), Endpoint{host, port}};
}

enum class RedirectKind { none, moved, ask, retry };

RedirectKind redirect_kind(const Reply& reply) {
    if (!reply.is_error()) return RedirectKind::none;
    std::string_view m = reply.error_message();
    if (m.starts_with("MOVED ")) return RedirectKind::moved;
    if (m.starts_with("ASK ")) return RedirectKind::ask;
    // Nothing ran: a multi-key request during a migration, a failover under way.
    if (m.starts_with("TRYAGAIN") || m.starts_with("CLUSTERDOWN") || failover_reply(reply))
        return RedirectKind::retry;
    return RedirectKind::none;
}

// A ConnectionError that left before any byte of the request was sent: the
// connection could not be opened (a dead node), or no pooled one was free.
bool nothing_sent(const ConnectionError& e) {
    std::string_view m = e.what();
    return m.find(" while connecting") != std::string_view::npos ||
           m.find("pooled connections stayed busy") != std::string_view::npos;
}

void pause(int attempt) {
    std::this_thread::sleep_for(
        std::min<std::chrono::milliseconds>(5ms * (1 << std::min(attempt, 6)), 100ms));
}

ConnectionOptions node_options(const ConnectionOptions& options) {
    ConnectionOptions node = options;
    node.cluster.reset();
    node.sentinel.reset();
    node.path.clear();
    node.db = 0;
    return node;
}

}  // namespace

std::uint16_t crc16(std::string_view data) noexcept {
    std::uint16_t crc = 0;
    for (char c : data)
        crc = static_cast<std::uint16_t>((crc << 8) ^
                                         kCrcTable[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xff]);
    return crc;
}

bool has_hash_tag(std::string_view key) noexcept {
    auto open = key.find('{');
    if (open == std::string_view::npos) return false;
    auto close = key.find('}', open + 1);
    return close != std::string_view::npos && close != open + 1;
}

std::string same_slot_key(std::string_view key, std::string_view suffix) {
    std::string out;
    if (has_hash_tag(key) || key.find('}') != std::string_view::npos || key.empty()) {
        out.reserve(key.size() + suffix.size());
        return out.append(key).append(suffix);
    }
    out.reserve(key.size() + suffix.size() + 2);
    return out.append("{").append(key).append("}").append(suffix);
}

std::uint16_t key_slot(std::string_view key) noexcept {
    if (auto open = key.find('{'); open != std::string_view::npos) {
        auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close != open + 1)
            key = key.substr(open + 1, close - open - 1);
    }
    return static_cast<std::uint16_t>(crc16(key) & (kClusterSlots - 1));
}

std::vector<ParsedCommand> parse_commands(std::string_view resp) {
    std::vector<ParsedCommand> out;
    for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view text) {
        out.push_back(ParsedCommand{.args = args, .resp = text});
        return true;
    });
    return out;
}

namespace {

// Calls `key(k)` for each key of the command `args`, in order; allocates nothing.
template <class Key>
void visit_keys(const std::vector<std::string_view>& args, Key&& key) {
    if (args.size() < 2) return;
    const std::size_t n = args.size();
    switch (spec_of(args[0])) {
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

}  // namespace

std::vector<std::string_view> command_keys(const std::vector<std::string_view>& args) {
    std::vector<std::string_view> keys;
    visit_keys(args, [&](std::string_view k) { keys.push_back(k); });
    return keys;
}

void validate_cluster(const ConnectionOptions& options) {
    const ClusterOptions& c = *options.cluster;
    if (c.seeds.empty()) throw ConfigurationError("ClusterOptions.seeds is empty");
    for (const Endpoint& e : c.seeds) {
        if (e.host.empty()) throw ConfigurationError("ClusterOptions.seeds has an empty host");
        if (e.port <= 0 || e.port > 65535)
            throw ConfigurationError(
                fmt::format("ClusterOptions.seeds: port {} of {:?} is not from 1 to 65535", e.port, e.host));
    }
    if (c.refresh_interval.count() < 0)
        throw ConfigurationError("ClusterOptions.refresh_interval must not be negative");
    if (options.sentinel)
        throw ConfigurationError(
            "ConnectionOptions.cluster and ConnectionOptions.sentinel cannot both be set");
    if (!options.path.empty())
        throw ConfigurationError("ConnectionOptions.cluster and ConnectionOptions.path cannot both be set");
    if (options.db != 0)
        throw ConfigurationError(
            fmt::format("ConnectionOptions.db is {}: a Redis Cluster has only database 0", options.db));
}

std::string describe_cluster(const ConnectionOptions& options) {
    std::string list;
    for (const Endpoint& e : options.cluster->seeds) {
        if (!list.empty()) list += ',';
        list += text(e);
    }
    return fmt::format("cluster via {}", list);
}

// --- the router ------------------------------------------------------------------

ClusterRouter::ClusterRouter(const ConnectionOptions& options, std::atomic<std::uint64_t>& round_trips)
    : options_(options), node_options_(node_options(options)), round_trips_(round_trips) {
    slot_shard_.fill(-1);
}

ClusterRouter::~ClusterRouter() = default;

Connection& ClusterRouter::node(const Endpoint& endpoint) {
    std::lock_guard lock(nodes_mutex_);
    auto it = nodes_.find(endpoint);
    if (it != nodes_.end()) return *it->second;
    ConnectionOptions o = node_options_;
    o.host = endpoint.host;
    o.port = endpoint.port;
    return *nodes_.emplace(endpoint, std::make_unique<Connection>(std::move(o))).first->second;
}

void ClusterRouter::refresh_if_due() {
    bool due = stale_.load(std::memory_order_relaxed);
    const auto interval = options_.cluster->refresh_interval;
    if (!due && interval.count() > 0) {
        const auto now = Clock::now().time_since_epoch().count();
        due = now - refreshed_at_.load(std::memory_order_relaxed) >
              std::chrono::duration_cast<Clock::duration>(interval).count();
    }
    if (due) refresh(false);
}

bool ClusterRouter::refresh(bool wait) {
    std::unique_lock guard(refresh_mutex_, std::defer_lock);
    if (wait)
        guard.lock();
    else if (!guard.try_lock())
        return true;  // another thread is reading the map; use the one we have
    // The nodes we know first (the seeds may be gone), then the seeds.
    std::vector<Endpoint> ask;
    {
        std::shared_lock lock(map_mutex_);
        for (const Shard& s : shards_) ask.push_back(s.master);
        for (const Shard& s : shards_) ask.insert(ask.end(), s.replicas.begin(), s.replicas.end());
    }
    for (const Endpoint& e : options_.cluster->seeds)
        if (std::find(ask.begin(), ask.end(), e) == ask.end()) ask.push_back(e);

    std::string problems;
    for (const Endpoint& from : ask) {
        Reply map;
        try {
            round_trips_.fetch_add(1, std::memory_order_relaxed);
            map = node(from).command("CLUSTER", "SLOTS");
        } catch (const Error& e) {
            problems += fmt::format("{}{}", problems.empty() ? "" : "; ", e.what());
            continue;
        }
        std::vector<Shard> shards;
        std::array<std::int16_t, kClusterSlots> slots;
        slots.fill(-1);
        std::size_t covered = 0;
        try {
            for (const Reply& range : map.as_array()) {
                if (range.size() < 3) continue;
                const long long first = range[0].as_integer(), last = range[1].as_integer();
                auto endpoint = [&](const Reply& node) {
                    std::string host = node[0].as_string();
                    return Endpoint{host.empty() || host == "?" ? from.host : host,
                                    static_cast<int>(node[1].as_integer())};
                };
                Endpoint master = endpoint(range[2]);
                auto it = std::find_if(shards.begin(), shards.end(),
                                       [&](const Shard& s) { return s.master == master; });
                if (it == shards.end()) {
                    Shard s{master, {}};
                    for (std::size_t r = 3; r < range.size(); ++r) s.replicas.push_back(endpoint(range[r]));
                    shards.push_back(std::move(s));
                    it = shards.end() - 1;
                }
                const auto index = static_cast<std::int16_t>(it - shards.begin());
                for (long long slot = std::max(0LL, first); slot <= last && slot < 16384; ++slot) {
                    slots[static_cast<std::size_t>(slot)] = index;
                    ++covered;
                }
            }
        } catch (const Error& e) {
            problems +=
                fmt::format("{}{}: CLUSTER SLOTS: {}", problems.empty() ? "" : "; ", text(from), e.what());
            continue;
        }
        if (covered == 0) {
            problems +=
                fmt::format("{}{}: CLUSTER SLOTS lists no slot", problems.empty() ? "" : "; ", text(from));
            continue;
        }
        {
            std::unique_lock lock(map_mutex_);
            shards_ = std::move(shards);
            slot_shard_ = slots;
        }
        stale_.store(false, std::memory_order_relaxed);
        refreshed_at_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        refreshes_.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    bool known;
    {
        std::shared_lock lock(map_mutex_);
        known = !shards_.empty();
    }
    if (!known)
        throw ConnectionError(fmt::format("Redis {}: no node answered CLUSTER SLOTS ({})",
                                          describe_cluster(options_), problems));
    return false;
}

ClusterRouter::Target ClusterRouter::route(std::optional<std::uint16_t> slot, bool replica_ok) {
    refresh_if_due();
    for (int round = 0;; ++round) {
        {
            std::shared_lock lock(map_mutex_);
            if (!shards_.empty()) {
                std::int16_t index = slot ? slot_shard_[*slot] : -1;
                if (index < 0) {
                    if (slot) mark_stale();  // an uncovered slot: a MOVED will say where it is
                    index = static_cast<std::int16_t>(spread_.fetch_add(1, std::memory_order_relaxed) %
                                                      shards_.size());
                }
                const Shard& shard = shards_[static_cast<std::size_t>(index)];
                if (replica_ok && options_.cluster->read_from_replicas && !shard.replicas.empty())
                    return {shard.replicas[spread_.fetch_add(1, std::memory_order_relaxed) %
                                           shard.replicas.size()],
                            true};
                return {shard.master, false};
            }
        }
        refresh(true);  // the first request: throws when no node answers
    }
}

void ClusterRouter::moved(std::uint16_t slot, const Endpoint& to) {
    {
        std::unique_lock lock(map_mutex_);
        auto it =
            std::find_if(shards_.begin(), shards_.end(), [&](const Shard& s) { return s.master == to; });
        if (it == shards_.end()) {
            shards_.push_back(Shard{to, {}});
            it = shards_.end() - 1;
        }
        slot_shard_[slot] = static_cast<std::int16_t>(it - shards_.begin());
    }
    mark_stale();  // a slot seldom moves alone: read the whole map before the next request
}

std::optional<std::uint16_t> ClusterRouter::slot_of(std::string_view resp, std::string_view what,
                                                    bool* reads) const {
    std::optional<std::uint16_t> slot;
    bool mixed = false, any = false, all_read = true;
    const bool well_formed = for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view) {
        any = true;
        if (reads) all_read = all_read && read_only_command(args[0]);
        visit_keys(args, [&](std::string_view key) {
            const std::uint16_t s = key_slot(key);
            if (!slot)
                slot = s;
            else if (s != *slot)
                mixed = true;
        });
        return !mixed;
    });
    if (reads) *reads = well_formed && any && all_read;
    if (!mixed) return slot;
    // Name every key with its slot: the fix is a common hash tag.
    std::string list;
    std::size_t shown = 0;
    for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view) {
        visit_keys(args, [&](std::string_view k) {
            if (shown++ < 8)
                list += fmt::format("{}{} (slot {})", list.empty() ? "" : ", ", k.substr(0, 200), key_slot(k));
        });
        return true;
    });
    throw ConfigurationError(
        fmt::format("Redis Cluster: the keys of this {} are in different hash slots: {}; keys used together "
                    "need one hash tag, e.g. {{tag}}:a and {{tag}}:b",
                    what, list));
}

// Sends until the answer is not a redirection: MOVED corrects the map and
// sends again; ASK sends once to the named node after ASKING; TRYAGAIN and
// CLUSTERDOWN (nothing ran) wait a little and send again, within the call's
// time. A connection failure marks the map stale; the request is sent again
// only when nothing of it left (`nothing_sent`) or `resend_ok` (it only reads).
template <class Send, class Redirect>
auto ClusterRouter::routed(std::optional<std::uint16_t> slot, bool replica_ok, bool resend_ok,
                           std::chrono::milliseconds block, Send&& send, Redirect&& redirect_of) {
    const auto budget = std::max<std::chrono::milliseconds>(
        options_.command_timeout.count() > 0 ? options_.command_timeout : std::chrono::milliseconds(60000),
        1000ms);
    const auto deadline = Clock::now() + budget + block;
    std::optional<Endpoint> asking;
    for (int attempt = 0;; ++attempt) {
        Target target = asking ? Target{*asking, false} : route(slot, replica_ok && attempt == 0);
        const bool was_asking = asking.has_value();
        asking.reset();
        try {
            round_trips_.fetch_add(1, std::memory_order_relaxed);
            auto result = send(node(target.endpoint), was_asking, target.replica);
            const Reply* r = redirect_of(result);
            const RedirectKind kind = r ? redirect_kind(*r) : RedirectKind::none;
            if (kind == RedirectKind::none || attempt >= 30 || Clock::now() > deadline) return result;
            if (kind == RedirectKind::retry) {
                mark_stale();
                pause(attempt);
                continue;
            }
            auto where = redirection(r->error_message(), target.endpoint);
            if (!where) return result;
            if (kind == RedirectKind::moved)
                moved(where->first, where->second);
            else
                asking = where->second;
        } catch (const ConnectionError& e) {
            mark_stale();
            if ((!resend_ok && !nothing_sent(e)) || Clock::now() > deadline) throw;
            pause(attempt);
        }
    }
}

Reply ClusterRouter::execute_one(const CommandBuffer& buffer, std::chrono::milliseconds block,
                                 std::optional<std::string_view> routing_key) {
    bool reads = false;
    std::optional<std::uint16_t> slot;
    if (routing_key) {
        slot = key_slot(*routing_key);  // the caller names the key; the command is not checked
        reads = read_only_request(buffer.data());
    } else {
        slot = slot_of(buffer.data(), "command", &reads);
    }
    return routed(
        slot, reads, reads, block,
        [&](Connection& node, bool asking, bool replica) {
            if (!asking && !replica) return node.execute_one(buffer, block);
            Pipeline p;
            if (asking) p.command("ASKING");
            if (replica) p.command("READONLY");
            p.append_encoded(buffer.data(), 1);
            return node.execute(p).back();
        },
        [](const Reply& r) { return &r; });
}

Reply ClusterRouter::one_command(const ParsedCommand& command, std::optional<std::uint16_t> slot) {
    CommandBuffer buffer;
    buffer.append_encoded(command.resp, 1);
    const bool reads = read_only_request(command.resp);
    return routed(
        slot, false, reads, std::chrono::milliseconds(0),
        [&](Connection& node, bool asking, bool) {
            if (!asking) return node.execute_one(buffer);
            Pipeline p;
            p.command("ASKING");
            p.append_encoded(command.resp, 1);
            return node.execute(p).back();
        },
        [](const Reply& r) { return &r; });
}

// A pipeline is split per node. Every node's part goes out before any reply
// is read, so a pipeline over k nodes waits about one round trip, not k.
// Commands on different nodes were never ordered against each other.
std::vector<Reply> ClusterRouter::execute(const Pipeline& pipeline) {
    const auto commands = parse_commands(pipeline.buffer().data());
    const std::size_t n = commands.size();
    std::vector<std::optional<std::uint16_t>> slots(n);
    for (std::size_t i = 0; i < n; ++i) slots[i] = slot_of(commands[i].resp, "command");

    // Group by node, keyless commands with the node of the command before them.
    std::vector<Endpoint> targets(n);
    std::vector<Endpoint> order;  // the nodes used
    std::optional<Endpoint> previous;
    for (std::size_t i = 0; i < n; ++i) {
        targets[i] = slots[i] || !previous ? route(slots[i], false).endpoint : *previous;
        previous = targets[i];
        if (std::find(order.begin(), order.end(), targets[i]) == order.end()) order.push_back(targets[i]);
    }
    std::vector<Reply> replies(n);
    std::vector<std::size_t> again;  // redirected or cut off: sent once more, alone
    const bool reads = read_only_request(pipeline.buffer().data());
    // A part that failed: a read, or a request that never left, is sent again
    // alone; a write that may have run reaches the caller.
    auto failed = [&](const std::vector<std::size_t>& members, const ConnectionError& e) {
        mark_stale();
        if (!reads && !nothing_sent(e)) throw;
        again.insert(again.end(), members.begin(), members.end());
    };
    auto take = [&](const std::vector<std::size_t>& members, std::vector<Reply>& got) {
        for (std::size_t k = 0; k < members.size() && k < got.size(); ++k) {
            replies[members[k]] = std::move(got[k]);
            if (redirect_kind(replies[members[k]]) != RedirectKind::none) again.push_back(members[k]);
        }
    };
    if (order.size() == 1) {
        std::vector<std::size_t> all(n);
        for (std::size_t i = 0; i < n; ++i) all[i] = i;
        try {
            round_trips_.fetch_add(1, std::memory_order_relaxed);
            std::vector<Reply> got = node(order.front()).execute(pipeline);
            take(all, got);
        } catch (const ConnectionError& e) {
            failed(all, e);
        }
    } else {
        // Links are leased in endpoint order: two threads that each need the
        // same full pools cannot each hold one while waiting for the other.
        std::sort(order.begin(), order.end(), EndpointLess{});
        struct Part {
            std::vector<std::size_t> members;
            Pipeline request;
            std::unique_ptr<Connection::Impl::Lease> lease;  // set while its replies are owed
        };
        std::vector<Part> parts(order.size());
        for (std::size_t i = 0; i < n; ++i) {
            Part& part = parts[static_cast<std::size_t>(
                std::find(order.begin(), order.end(), targets[i]) - order.begin())];
            part.members.push_back(i);
            part.request.append_encoded(commands[i].resp, 1);
        }
        const auto timeout = node_options_.command_timeout;
        const Deadline deadline = deadline_after(timeout);
        for (std::size_t p = 0; p < parts.size(); ++p) {
            Part& part = parts[p];
            try {
                round_trips_.fetch_add(1, std::memory_order_relaxed);
                part.lease = std::make_unique<Connection::Impl::Lease>(*node(order[p]).impl_);
                const std::string_view request = part.request.buffer().data();
                part.lease->link().send({&request, 1}, part.members.size(), deadline, timeout.count());
            } catch (const ConnectionError& e) {
                part.lease.reset();
                failed(part.members, e);
            }
        }
        for (Part& part : parts) {
            if (!part.lease) continue;
            try {
                std::vector<Reply> got;
                part.lease->link().receive_many(part.members.size(), deadline, timeout.count(), got);
                part.lease.reset();
                take(part.members, got);
            } catch (const ConnectionError& e) {
                part.lease.reset();
                failed(part.members, e);
            }
        }
    }
    std::sort(again.begin(), again.end());
    for (std::size_t i : again) replies[i] = one_command(commands[i], slots[i]);
    return replies;
}

TransactionReplies ClusterRouter::transaction(const CommandBuffer& buffer) {
    const std::optional<std::uint16_t> slot = slot_of(buffer.data(), "transaction");
    return routed(
        slot, false, false, std::chrono::milliseconds(0),
        [&](Connection& node, bool asking, bool) {
            Connection::Impl::Lease lease(*node.impl_);
            return node.impl_->transaction_on(lease.link(), buffer, asking);
        },
        // A command refused while queueing (MOVED, ASK, TRYAGAIN) aborts EXEC: nothing ran.
        [](const TransactionReplies& got) -> const Reply* {
            for (const Reply* r : {&got.multi, got.rejected ? &*got.rejected : nullptr, &got.exec})
                if (r && redirect_kind(*r) != RedirectKind::none) return r;
            return nullptr;
        });
}

std::size_t ClusterRouter::open_connections() const {
    std::lock_guard lock(nodes_mutex_);
    std::size_t total = 0;
    for (const auto& [endpoint, conn] : nodes_) total += conn->open_connections();
    return total;
}

void ClusterRouter::reset() const {
    std::lock_guard lock(nodes_mutex_);
    for (const auto& [endpoint, conn] : nodes_) conn->reset();
}

}  // namespace retools::detail
