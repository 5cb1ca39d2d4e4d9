#pragma once
// Connection's private state: the options, the TLS context shared by every
// socket, and one pool of Links per process (fork safety).

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

#include "client/cluster.hpp"
#include "client/health.hpp"
#include "client/link.hpp"
#include "client/multiplexer.hpp"
#include "client/sentinel.hpp"
#include "client/signal_hub.hpp"
#include "client/tls.hpp"

namespace retools {

struct Connection::Impl {
    // The pool of one process. After fork() the child makes a new Pool and
    // leaves the parent's (its sockets and mutex) untouched.
    struct Pool {
        Pool(pid_t owner, const ConnectionOptions& options);
        const pid_t pid;
        // Whether the server is down (calls then fail fast); see client/health_fsm.hpp.
        detail::HealthGate health;
        // Sentinel mode: the master generation `health` judges; a failover resets it.
        std::atomic<std::uint64_t> health_generation{0};
        std::mutex mutex;
        std::condition_variable available;
        std::vector<std::unique_ptr<detail::Link>> idle;  // most recently used last
        std::size_t open = 0;
        // Sentinel mode: where the master is now (one per process, like the links).
        std::unique_ptr<detail::SentinelMonitor> sentinel;
        // Cluster mode: the slot map and a Connection per node (the links above stay unused).
        std::unique_ptr<detail::ClusterRouter> cluster;
        // ConnectionOptions::multiplex (not Cluster mode, whose nodes have their own): the
        // shared link. The links above then serve only what may not share it.
        std::unique_ptr<detail::Multiplexer> mux;
        // Not Cluster mode: the one Pub/Sub connection that waiters share (its thread starts with the
        // first waiter). Declared last, so destroyed first: its thread may be dialing through the above.
        std::unique_ptr<detail::SignalHub> signals;
    };

    // Borrows one Link for one round trip. The pool's HealthGate is asked
    // first: while the server is down this throws at once, nothing sent. An
    // idle link the server closed (or idle past max_idle) is replaced first;
    // a link that failed is dropped on return instead of going back to the
    // pool. The probe of a server that was down sends a PING before the
    // caller's request goes out.
    class Lease {
    public:
        /// `admitted`: the HealthGate already admitted this call (true: as
        /// its probe); nullopt: ask it now.
        explicit Lease(Impl& impl, std::optional<bool> admitted = std::nullopt);
        ~Lease();
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        detail::Link& link() const noexcept { return *link_; }

    private:
        void take_or_dial();
        void dial();
        void probe();
        void give_back() noexcept;

        Impl& impl_;
        Pool& pool_;
        std::unique_ptr<detail::Link> link_;
        bool probe_ = false;  // this lease is the HealthGate's probe, not yet judged
    };

    explicit Impl(ConnectionOptions o);
    ~Impl();
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    Pool& current_pool();
    Pool* make_pool(pid_t owner);
    /// A new link to the server (in Sentinel mode, the master of `pool`), handshake done.
    std::unique_ptr<detail::Link> dial(Pool& owner) const;
    /// dial() for `owner`'s use: a failure is marked not sent and, when it
    /// shows the server down, tells the HealthGate (`probe`: as its probe,
    /// which it then no longer is). The link reports to the gate.
    std::unique_ptr<detail::Link> dial_checked(Pool& owner, bool& probe) const;
    /// Asks `owner`'s HealthGate (true: this call is the probe); throws while
    /// the server is down. In Sentinel mode a failover clears the gate first.
    static bool admit(Pool& owner);
    /// Sends `parts` (RESP text of `replies` commands) as one request and
    /// returns the replies: on the shared link when the pool multiplexes and
    /// `shareable`, else on a leased one. `generation` is set to the Sentinel
    /// generation of the link used.
    std::vector<Reply> round_trip(std::span<const std::string_view> parts, std::size_t replies,
                                  std::chrono::milliseconds timeout, bool shareable,
                                  std::uint64_t& generation);
    /// Runs `attempt(generation)` (a round trip that sets the Sentinel
    /// generation it used); in Sentinel mode, follows a failover and sends
    /// again when safe (see connection.cpp).
    template <class Attempt, class Refusal>
    auto with_failover(std::string_view request, Attempt&& attempt, Refusal&& refusal);
    /// MULTI, the commands of `buffer` and EXEC as one request (after ASKING
    /// when `asking`; its +OK is dropped), through round_trip(). Every reply
    /// is read before anything throws, so the link stays reusable.
    detail::TransactionReplies transaction(const detail::CommandBuffer& buffer, bool asking,
                                           std::uint64_t& generation);
    /// Whether a pooled idle link may serve another round trip.
    bool still_good(detail::Link& link) const;

    const ConnectionOptions options;
    const std::unique_ptr<const detail::TlsContext> tls;  // null: plain text
    std::atomic<Pool*> pool;
    std::atomic<std::uint64_t> round_trips{0};
};

}  // namespace retools
