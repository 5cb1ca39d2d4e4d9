#pragma once
// SignalHub: one Pub/Sub connection per server and process, shared by every
// caller waiting for a wake-up (a Lock waiter waiting for a release), so any
// number of waiters cost one socket rather than one each. Channels are
// subscribed by reference count: the first waiter on a channel subscribes,
// the last one leaving unsubscribes. A thread reads the messages; it starts
// with the first subscription and ends (closing its socket) once nothing has
// been subscribed for a while, so an idle process, or a forked child, keeps
// no thread.
//
// Messages are hints: a waiter always tries again after its own timeout, so a
// message lost while the socket reconnects costs a delay, never a deadlock.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace retools::detail {

class Link;

/// Whom a message wakes: one waiter of the channel (a released Lock admits
/// one) or all of them (a writer's release may admit many readers).
enum class SignalWake : std::uint8_t { one, all };

/// A channel: its waiters, what it has received, whether it is subscribed.
struct SignalChannel {
    std::size_t waiters = 0;
    SignalWake wake = SignalWake::one;
    std::uint64_t messages = 0;  // received so far
    std::size_t tokens = 0;      // SignalWake::one: messages not yet taken by a waiter
    bool sent = false;           // SUBSCRIBE written on the current link
    bool confirmed = false;      // the server confirmed it
    std::condition_variable arrived;
};

class SignalHub {
public:

    /// `dial` opens a link to the server (handshake done; throws ConnectionError).
    explicit SignalHub(std::function<std::unique_ptr<Link>()> dial);
    ~SignalHub();
    SignalHub(const SignalHub&) = delete;
    SignalHub& operator=(const SignalHub&) = delete;

    /// One waiter's interest in one channel, from construction to destruction.
    class Subscription {
    public:
        Subscription(SignalHub& hub, const std::string& channel, SignalWake wake);
        ~Subscription();
        Subscription(const Subscription&) = delete;
        Subscription& operator=(const Subscription&) = delete;
        /// Waits at most `timeout` for a message published since the last
        /// wait returned (or since construction); true when one came.
        bool wait(std::chrono::milliseconds timeout);

    private:
        SignalHub& hub_;
        std::map<std::string, SignalChannel>::iterator channel_;
        std::uint64_t seen_ = 0;  // SignalWake::all: messages seen so far
    };

    /// Channels subscribed on the server now (tests).
    std::size_t confirmed_channels() const;

private:
    friend class Subscription;
    void start_locked();
    void run();
    bool sync_subscriptions(Link& link);
    void deliver(const std::string& channel);

    const std::function<std::unique_ptr<Link>()> dial_;
    mutable std::mutex mutex_;
    std::map<std::string, SignalChannel> channels_;
    bool running_ = false;  // the reader thread runs
    bool stop_ = false;
    bool changed_ = false;  // subscriptions to send
    int wake_fd_ = -1;      // wakes the reader to send them
    std::thread thread_;
};

}  // namespace retools::detail

namespace retools {
class Connection;
namespace detail {
/// The hub of `conn`'s server in this process; null on a Cluster (waiters
/// there block on a connection of their own).
SignalHub* signal_hub(const Connection& conn);
}  // namespace detail
}  // namespace retools
