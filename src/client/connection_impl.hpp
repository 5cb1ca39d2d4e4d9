#pragma once
// Connection's private state: the options, the TLS context shared by every
// socket, and one pool of Links per process (fork safety).

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

#include "client/cluster.hpp"
#include "client/health.hpp"
#include "client/link.hpp"
#include "client/sentinel.hpp"
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
    };

    // Borrows one Link for one round trip. The pool's HealthGate is asked
    // first: while the server is down this throws at once, nothing sent. An
    // idle link the server closed (or idle past max_idle) is replaced first;
    // a link that failed is dropped on return instead of going back to the
    // pool. The probe of a server that was down sends a PING before the
    // caller's request goes out.
    class Lease {
    public:
        explicit Lease(Impl& impl);
        ~Lease();
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        detail::Link& link() const noexcept { return *link_; }

    private:
        bool admit();
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
    /// Runs `attempt(link)` on a leased link; in Sentinel mode, follows a
    /// failover and sends again when safe (see connection.cpp).
    template <class Attempt, class Refusal>
    auto with_failover(std::string_view request, Attempt&& attempt, Refusal&& refusal);
    /// MULTI, the commands of `buffer` and EXEC as one request on `link`
    /// (after ASKING when `asking`; its +OK is dropped). Every reply is read
    /// before anything throws, so the link stays reusable.
    detail::TransactionReplies transaction_on(detail::Link& link, const detail::CommandBuffer& buffer,
                                              bool asking = false);
    /// Whether a pooled idle link may serve another round trip.
    bool still_good(detail::Link& link) const;

    const ConnectionOptions options;
    const std::unique_ptr<const detail::TlsContext> tls;  // null: plain text
    std::atomic<Pool*> pool;
    std::atomic<std::uint64_t> round_trips{0};
};

}  // namespace retools
