#pragma once
// What the cluster router does after each answer to a routed request, apart
// from any I/O: follow MOVED and ASK to the node they name, wait a little
// when a redirection makes no progress (a node already seen sent us to the
// same place again), ask for the slot map to be read again, and give up only
// when the call's deadline has passed. The router (cluster.cpp) does the
// sending, sleeping and map reading; this is only the decisions, so they can
// be checked without a server.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail {

/// How a reply redirects: not at all, MOVED (the slot moved for good), ASK
/// (the slot is migrating; the key is on the named node), or retry
/// (TRYAGAIN, CLUSTERDOWN ...: nothing ran, send again a little later).
enum class RedirectKind { none, moved, ask, retry };

/// The slot and node of `MOVED 3999 127.0.0.1:6381` / `ASK ...`.
struct Redirection {
    std::uint16_t slot = 0;
    Endpoint to;
};
/// Parses a MOVED/ASK message; an empty host (a node that does not know its
/// address) means `from`'s host. Nullopt when the message is malformed.
std::optional<Redirection> parse_redirection(std::string_view message, const Endpoint& from);

/// Pause after the n-th redirection (from 0) that made no progress: 1 ms,
/// doubling, at most 50 ms.
std::chrono::milliseconds stall_pause(int n) noexcept;
/// Pause before the n-th resend (from 0) after TRYAGAIN/CLUSTERDOWN or a lost
/// connection: 5 ms, doubling, at most 100 ms.
std::chrono::milliseconds retry_pause(int n) noexcept;

/// The shortest time between two reads of the slot map asked for by errors
/// (MOVED, a lost connection): a storm of MOVED replies reads it at most
/// this often, whatever the number of threads.
inline constexpr std::chrono::milliseconds kMinMapRefreshGap{100};
/// Whether the router reads the slot map before a request: it is `stale` (or
/// older than `interval`, if > 0) and no read was tried in the last
/// kMinMapRefreshGap.
bool map_refresh_due(bool stale, std::chrono::steady_clock::duration since_tried,
                     std::chrono::steady_clock::duration since_read,
                     std::chrono::steady_clock::duration interval) noexcept;

/// The next step of a routed request.
struct RedirectStep {
    enum class Action {
        deliver,  // the answer is final: hand it to the caller
        resend,   // send again (after `pause`), to `to` or, without it, where the map says
        give_up,  // stop: a redirection becomes ConnectionError(give_up_message()); a
                  // lost connection is rethrown as it is
    };
    Action action = Action::deliver;
    std::optional<Endpoint> to;          // resend: the node named by MOVED/ASK
    bool asking = false;                 // resend: send ASKING first (ASK)
    std::chrono::milliseconds pause{0};  // resend: wait this long first
    bool refresh_map = false;            // the map is stale: read it again when due
    bool correct_map = false;            // MOVED: record now that `slot` is served by `to`
    std::uint16_t slot = 0;              // the slot a MOVED/ASK named
};

/// One routed request's redirections, from its first send to its answer.
class RedirectFsm {
public:
    using Clock = std::chrono::steady_clock;

    /// `slot`: the request's slot (none: keyless), first sent at `started`;
    /// after `deadline` no redirection is followed.
    RedirectFsm(std::optional<std::uint16_t> slot, Clock::time_point started,
                Clock::time_point deadline) noexcept
        : slot_(slot), started_(started), deadline_(deadline) {}

    /// After `from` answered with `kind` (`message`: the error text of a
    /// redirection) at `now`.
    RedirectStep on_reply(RedirectKind kind, std::string_view message, const Endpoint& from,
                          Clock::time_point now);
    /// After a ConnectionError at `now`; `resendable`: nothing of the request
    /// left, or it only reads, so sending it again cannot run a write twice.
    RedirectStep on_connection_error(bool resendable, Clock::time_point now);

    /// Sends so far (each on_reply / on_connection_error counts one).
    int attempts() const noexcept { return attempts_; }
    /// Redirections that made no progress so far.
    int stalls() const noexcept { return stalls_; }
    /// Why a redirection reached the caller: the slot, how long and how many
    /// times the cluster redirected, and its last words. `where` names the
    /// cluster (describe_cluster()).
    std::string give_up_message(std::string_view where, Clock::time_point now) const;

private:
    struct Seen {
        RedirectKind kind;
        Endpoint from, to;
    };
    RedirectStep resend_after(std::chrono::milliseconds pause, Clock::time_point now) const;

    std::optional<std::uint16_t> slot_;
    Clock::time_point started_;
    Clock::time_point deadline_;
    int attempts_ = 0;
    int stalls_ = 0;
    int retries_ = 0;
    std::vector<Seen> seen_;  // the redirections of this request (a handful)
    std::string last_;        // the last redirection's text
};

}  // namespace retools::detail
