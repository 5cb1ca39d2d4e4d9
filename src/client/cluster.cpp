#include "client/cluster.hpp"

#include <algorithm>
#include <charconv>
#include <memory>
#include <set>
#include <thread>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/cluster_redirect_fsm.hpp"
#include "client/command_table.hpp"
#include "client/connection_access.hpp"
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

std::string text(const Endpoint& e) {
    if (e.host.find(':') != std::string::npos) return fmt::format("[{}]:{}", e.host, e.port);
    return fmt::format("{}:{}", e.host, e.port);
}


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

// Errors (MOVED, a lost connection) mark the map stale; it is read again at
// most every kMinMapRefreshGap, however many requests saw them.
void ClusterRouter::refresh_if_due() {
    const auto now = Clock::now().time_since_epoch().count();
    const Clock::duration since_tried{now - refresh_tried_at_.load(std::memory_order_relaxed)};
    const Clock::duration since_read{now - refreshed_at_.load(std::memory_order_relaxed)};
    if (map_refresh_due(stale_.load(std::memory_order_relaxed), since_tried, since_read,
                        std::chrono::duration_cast<Clock::duration>(options_.cluster->refresh_interval)))
        refresh(false);
}

bool ClusterRouter::refresh(bool wait) {
    std::unique_lock guard(refresh_mutex_, std::defer_lock);
    if (wait)
        guard.lock();
    else if (!guard.try_lock())
        return true;  // another thread is reading the map; use the one we have
    refresh_tried_at_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    // The node a MOVED named first (it knows it serves the slot, where a node
    // that has not learnt of the move yet would send us back), the nodes we
    // know (the seeds may be gone), then the seeds.
    std::vector<Endpoint> ask;
    {
        std::unique_lock lock(map_mutex_);
        if (moved_to_) ask.push_back(*moved_to_);
        moved_to_.reset();
        for (const Shard& s : shards_)
            if (std::find(ask.begin(), ask.end(), s.master) == ask.end()) ask.push_back(s.master);
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
        throw_not_sent(fmt::format("Redis {}: no node answered CLUSTER SLOTS ({})",
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
        moved_to_ = to;
    }
    mark_stale();  // a slot seldom moves alone: read the whole map when due
}

std::optional<std::uint16_t> ClusterRouter::slot_of(std::string_view resp, std::string_view what,
                                                    bool* reads) const {
    std::optional<std::uint16_t> slot;
    bool mixed = false, any = false, all_read = true;
    const bool well_formed =
        for_each_command(resp, [&](const std::vector<std::string_view>& args, std::string_view) {
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
                list +=
                    fmt::format("{}{} (slot {})", list.empty() ? "" : ", ", k.substr(0, 200), key_slot(k));
        });
        return true;
    });
    throw ConfigurationError(
        fmt::format("Redis Cluster: the keys of this {} are in different hash slots: {}; keys used together "
                    "need one hash tag, e.g. {{tag}}:a and {{tag}}:b",
                    what, list));
}

// Sends until the answer is not a redirection, within the call's time
// (command_timeout, at least 1 s, plus `block`); RedirectFsm decides each
// step. MOVED: straight to the node named (the map is corrected, and read
// again when due); ASK: `ASKING` and the command on the node named, once;
// TRYAGAIN and CLUSTERDOWN (nothing ran): a little later, where the map says.
// A hop seen before pauses briefly instead of spinning. A redirection still
// under way at the deadline is a ConnectionError naming the slot, never the
// raw reply. A connection failure marks the map stale; the request is sent
// again only when nothing of it left (`maybe_executed()` false) or `resend_ok` (it only
// reads).
template <class Send, class Redirect>
auto ClusterRouter::routed(std::optional<std::uint16_t> slot, bool replica_ok, bool resend_ok,
                           std::chrono::milliseconds block, Send&& send, Redirect&& redirect_of) {
    const auto budget = std::max<std::chrono::milliseconds>(
        options_.command_timeout.count() > 0 ? options_.command_timeout : std::chrono::milliseconds(60000),
        1000ms);
    const auto started = Clock::now();
    RedirectFsm fsm(slot, started, started + budget + block);
    using Result = std::decay_t<decltype(send(std::declval<Connection&>(), false, false))>;
    RedirectStep step;  // the first send: where the map says
    for (;;) {
        const Target target =
            step.to ? Target{*step.to, false} : route(slot, replica_ok && fsm.attempts() == 0);
        std::optional<Result> result;
        try {
            round_trips_.fetch_add(1, std::memory_order_relaxed);
            result.emplace(send(node(target.endpoint), step.asking, target.replica));
        } catch (const ConnectionError& e) {
            mark_stale();
            step = fsm.on_connection_error(resend_ok || !e.maybe_executed(), Clock::now());
            if (step.action == RedirectStep::Action::give_up) throw;
        }
        if (result) {
            const Reply* r = redirect_of(*result);
            const RedirectKind kind = r ? redirect_kind(*r) : RedirectKind::none;
            step = fsm.on_reply(kind, kind == RedirectKind::none ? std::string_view() : r->error_message(),
                                target.endpoint, Clock::now());
            if (step.action == RedirectStep::Action::deliver) return std::move(*result);
            if (step.action == RedirectStep::Action::give_up)
                throw_not_sent(fsm.give_up_message(describe_cluster(options_), Clock::now()));
        }
        if (step.correct_map) moved(step.slot, *step.to);
        if (step.refresh_map) mark_stale();
        if (step.pause.count() > 0) std::this_thread::sleep_for(step.pause);
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
            if (!asking && !replica) return send_command(node, buffer, std::nullopt, block);
            Pipeline p;
            if (asking) p.command("ASKING");
            if (replica) p.command("READONLY");
            ConnectionAccess::buffer(p).append_encoded(buffer.data(), 1);
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
            if (!asking) return send_command(node, buffer);
            Pipeline p;
            p.command("ASKING");
            ConnectionAccess::buffer(p).append_encoded(command.resp, 1);
            return node.execute(p).back();
        },
        [](const Reply& r) { return &r; });
}

// A pipeline is split per node. Every node's part goes out before any reply
// is read, so a pipeline over k nodes waits about one round trip, not k.
// Commands on different nodes were never ordered against each other.
std::vector<Reply> ClusterRouter::execute(const Pipeline& pipeline) {
    const auto commands = parse_commands(ConnectionAccess::buffer(pipeline).data());
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
    const bool reads = read_only_request(ConnectionAccess::buffer(pipeline).data());
    // A part that failed: a read, or a request that never left, is sent again
    // alone; a write that may have run reaches the caller.
    auto failed = [&](const std::vector<std::size_t>& members, const ConnectionError& e) {
        mark_stale();
        if (!reads && !!e.maybe_executed()) throw;
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
            std::unique_ptr<ConnectionAccess::Impl::Lease> lease;  // set while its replies are owed
        };
        std::vector<Part> parts(order.size());
        for (std::size_t i = 0; i < n; ++i) {
            Part& part = parts[static_cast<std::size_t>(std::find(order.begin(), order.end(), targets[i]) -
                                                        order.begin())];
            part.members.push_back(i);
            ConnectionAccess::buffer(part.request).append_encoded(commands[i].resp, 1);
        }
        const auto timeout = node_options_.command_timeout;
        const Deadline deadline = deadline_after(timeout);
        for (std::size_t p = 0; p < parts.size(); ++p) {
            Part& part = parts[p];
            try {
                round_trips_.fetch_add(1, std::memory_order_relaxed);
                part.lease =
                    std::make_unique<ConnectionAccess::Impl::Lease>(ConnectionAccess::impl(node(order[p])));
                const std::string_view request = ConnectionAccess::buffer(part.request).data();
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
            std::uint64_t generation = 0;
            return ConnectionAccess::impl(node).transaction(buffer, asking, generation);
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

bool ClusterRouter::healthy() const {
    std::vector<Endpoint> masters;
    {
        std::shared_lock lock(map_mutex_);
        for (const Shard& shard : shards_) masters.push_back(shard.master);
    }
    std::lock_guard lock(nodes_mutex_);
    for (const Endpoint& master : masters) {
        auto it = nodes_.find(master);
        if (it != nodes_.end() && !it->second->healthy()) return false;
    }
    return true;
}

void ClusterRouter::reset() const {
    std::lock_guard lock(nodes_mutex_);
    for (const auto& [endpoint, conn] : nodes_) conn->reset();
}

}  // namespace retools::detail
