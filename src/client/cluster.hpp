#pragma once
// Redis Cluster: hash slots, the keys of a command, and the router that sends
// each request to the node serving its slot, for one process's pool.
//
// The router keeps one ordinary Connection per node (its own pool, TLS, AUTH
// and fork safety) and the slot map read with `CLUSTER SLOTS`. It follows
// MOVED (the slot moved for good: the map is corrected and read again), ASK
// (the slot is migrating: `ASKING` and the command once on the named node),
// TRYAGAIN (a multi-key request during a migration) and CLUSTERDOWN (a
// failover under way: nothing ran) for as long as the call's time allows
// (the decisions: cluster_redirect_fsm.hpp), and reads the map again after
// a connection failure and every ClusterOptions::refresh_interval.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/detail/command_buffer.hpp>
#include <retools/reply.hpp>

namespace retools::detail {

inline constexpr std::size_t kClusterSlots = 16384;

/// CRC16 (XMODEM) of `data`, as Redis Cluster computes it.
std::uint16_t crc16(std::string_view data) noexcept;
/// The hash slot of `key`: CRC16 of the key, or of the text between its first
/// `{` and the next `}` when that is not empty (a hash tag), modulo 16384.
std::uint16_t key_slot(std::string_view key) noexcept;

/// True when `key` has a hash tag (a non-empty `{...}`): only that part is hashed.
bool has_hash_tag(std::string_view key) noexcept;
/// `key` + `suffix`, named so that it lands in the slot of `key` on a cluster:
/// unchanged when `key` has a hash tag, else `{<key>}<suffix>` (its tag is
/// the whole of `key`, which is what `key` hashes as). A key with a `}` and no
/// tag has no such sibling: `key` + `suffix` (a script using both is then
/// refused as cross-slot, naming them).
std::string same_slot_key(std::string_view key, std::string_view suffix);

/// One command of a RESP buffer: its arguments and where its text lies.
struct ParsedCommand {
    std::vector<std::string_view> args;
    std::string_view resp;
};
/// Splits a RESP request into its commands (the buffer must outlive the views).
std::vector<ParsedCommand> parse_commands(std::string_view resp);

/// ConnectionOptions::from_url for `redis-cluster://` URLs.
ConnectionOptions parse_cluster_url(std::string_view url);
/// ConnectionOptions::describe() with a cluster: `cluster via 10.0.0.1:7000,10.0.0.2:7000`.
std::string describe_cluster(const ConnectionOptions& options);
/// Checks ClusterOptions when a Connection is made; throws ConfigurationError.
void validate_cluster(const ConnectionOptions& options);

/// The replies of MULTI, the first command refused while queueing (if any), and EXEC.
struct TransactionReplies {
    Reply multi;
    std::optional<Reply> rejected;
    Reply exec;
};

class ClusterRouter {
public:
    /// `options.cluster` must be set. Nothing is sent before the first request.
    /// Every request made is counted in `round_trips`.
    ClusterRouter(const ConnectionOptions& options, std::atomic<std::uint64_t>& round_trips);
    ~ClusterRouter();
    ClusterRouter(const ClusterRouter&) = delete;
    ClusterRouter& operator=(const ClusterRouter&) = delete;

    /// One command, routed by its keys or, when given, by `routing_key`.
    Reply execute_one(const CommandBuffer& buffer, std::chrono::milliseconds block,
                      std::optional<std::string_view> routing_key);
    /// A pipeline: one request per node, replies in the pipeline's order.
    std::vector<Reply> execute(const Pipeline& pipeline);
    /// MULTI/EXEC on the node of the one slot all its keys share.
    TransactionReplies transaction(const CommandBuffer& buffer);

    /// Connections open to every node.
    std::size_t open_connections() const;
    /// No master of the slot map is failing fast (Connection::healthy()).
    bool healthy() const;
    /// Closes idle connections of every node.
    void reset() const;
    /// Slot map reads so far (for tests).
    std::uint64_t refreshes() const noexcept { return refreshes_.load(std::memory_order_relaxed); }

private:
    struct Shard {
        Endpoint master;
        std::vector<Endpoint> replicas;
    };
    struct Target {
        Endpoint endpoint;
        bool replica = false;
    };

    Connection& node(const Endpoint& endpoint);
    /// The master (or, for a read with read_from_replicas, a replica) of `slot`;
    /// keyless requests (no slot) go to the masters in turn.
    Target route(std::optional<std::uint16_t> slot, bool replica_ok);
    void refresh_if_due();
    /// Reads the slot map from a known node or a seed; false when none
    /// answered. `wait`: wait for a refresh under way instead of skipping.
    bool refresh(bool wait);
    /// Sends with `send(node, asking, replica)` until the reply is not a
    /// redirection or the call's time is up (see cluster.cpp).
    template <class Send, class Redirect>
    auto routed(std::optional<std::uint16_t> slot, bool replica_ok, bool resend_ok,
                std::chrono::milliseconds block, Send&& send, Redirect&& redirect);
    Reply one_command(const ParsedCommand& command, std::optional<std::uint16_t> slot);
    void moved(std::uint16_t slot, const Endpoint& to);
    void mark_stale() noexcept { stale_.store(true, std::memory_order_relaxed); }
    /// The one slot of every key in `resp` (none: no key); keys in two
    /// slots throw ConfigurationError naming them (`what`: "command", ...).
    /// `reads`, when given, is set to read_only_request(resp) (one pass for both;
    /// see command_table.hpp).
    std::optional<std::uint16_t> slot_of(std::string_view resp, std::string_view what,
                                         bool* reads = nullptr) const;

    const ConnectionOptions options_;  // options_.cluster is set
    const ConnectionOptions node_options_;
    std::atomic<std::uint64_t>& round_trips_;

    mutable std::shared_mutex map_mutex_;
    std::vector<Shard> shards_;
    std::array<std::int16_t, kClusterSlots> slot_shard_{};  // index into shards_, -1: unknown
    std::atomic<bool> stale_{true};
    std::atomic<std::int64_t> refreshed_at_{0};  // steady clock, ns
    std::atomic<std::int64_t> refresh_tried_at_{0};  // steady clock, ns: the last read begun
    std::optional<Endpoint> moved_to_;  // under map_mutex_: the node the last MOVED named
    std::mutex refresh_mutex_;                   // one reader of the map at a time
    std::atomic<std::uint64_t> refreshes_{0};
    std::atomic<std::uint64_t> spread_{0};  // keyless commands and replicas, round robin

    mutable std::mutex nodes_mutex_;
    struct EndpointLess {
        bool operator()(const Endpoint& a, const Endpoint& b) const noexcept {
            return a.port != b.port ? a.port < b.port : a.host < b.host;
        }
    };
    std::map<Endpoint, std::unique_ptr<Connection>, EndpointLess> nodes_;  // never removed
};

}  // namespace retools::detail
