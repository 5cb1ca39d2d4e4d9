#pragma once
// Multiplexer: many threads' requests on one shared Link. Requests queue in
// arrival order; whichever caller finds nobody doing I/O becomes the leader:
// it writes everything queued in one write, reads replies in order and hands
// each to its caller as soon as it is parsed (one wake-up per waiting
// caller), and when its own reply is in, passes the role to the caller whose
// reply comes next (or whose request waits to be written). A lone caller
// writes and reads on its own thread: no hand-off, no extra thread.
//
// While the leader waits for a reply longer than 100 µs, a new request wakes
// it (an eventfd polled beside the socket) to be written at once, so requests
// never wait for a slow round trip to go out. Only the leader touches the link (one thread
// at a time on a TLS session) and the written-but-unanswered FIFO; the
// mutex guards the queue and the hand-off. A failed link fails every request
// written on it (they may have run) and is dropped; requests not yet written
// are then written on a new link, or bounced back to their callers while
// the server counts as down (they ask the HealthGate again and fail fast).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include <retools/reply.hpp>

#include "client/link.hpp"
#include "client/transport.hpp"

namespace retools::detail {

class HealthGate;

/// One caller's request: `parts` hold `replies` commands' RESP text and stay
/// valid until run() returns.
struct MuxRequest {
    std::span<const std::string_view> parts;
    std::size_t replies = 1;
    Deadline deadline = Deadline::max();
    long long timeout_ms = 0;

    // Filled in by the multiplexer.
    std::vector<Reply> out;
    std::exception_ptr error;
    std::uint64_t generation = 0;  // of the link it was written on (Sentinel)

    // queued: not answered yet (written or not); done: answered or failed;
    // bounced: not sent, the server is down.
    enum class State : std::uint8_t { queued, done, bounced };
    State state = State::queued;
    bool lead = false;  // the leader handed the I/O to this request's caller
    std::condition_variable wake;
};

class Multiplexer {
public:
    /// `dial` opens a link (handshake done; throws ConnectionError);
    /// `reusable(link)` says whether an idle link may carry more requests
    /// (not closed by the server, not left over from an older master).
    Multiplexer(HealthGate& health, std::function<std::unique_ptr<Link>()> dial,
                std::function<bool(Link&)> reusable);
    ~Multiplexer();
    Multiplexer(const Multiplexer&) = delete;
    Multiplexer& operator=(const Multiplexer&) = delete;

    /// Sends `r` and waits for its replies (in r.out) or its failure (thrown).
    /// False: not sent because the server is down; ask the HealthGate again.
    bool run(MuxRequest& r);

    /// Whether the shared link is open (for Connection::open_connections).
    bool open() const noexcept;
    /// Closes the shared link once nothing is owed on it.
    void reset() noexcept;

private:
    void lead(std::unique_lock<std::mutex>& lock, MuxRequest& mine);
    void write_queued(std::unique_lock<std::mutex>& lock);
    bool reply_soon();
    bool wait_for_reply();
    void read_one();
    void fail_written(std::exception_ptr error);
    void finish(MuxRequest& r, MuxRequest::State state);
    void finish_all(const std::vector<MuxRequest*>& answered);
    void hand_off();
    bool prepare_link(std::vector<MuxRequest*>& batch);

    HealthGate& health_;
    const std::function<std::unique_ptr<Link>()> dial_;
    const std::function<bool(Link&)> reusable_;

    std::mutex mutex_;
    std::deque<MuxRequest*> queued_;  // not yet written, oldest first
    bool leading_ = false;            // someone does (or was handed) the I/O
    bool drop_link_ = false;          // reset() asked to close the link
    bool leader_polling_ = false;     // the leader waits for a reply: wake it to write
    bool wake_sent_ = false;          // wake_fd_ was signalled since the leader last looked
    int wake_fd_ = -1;                // an eventfd beside the socket in the leader's poll()

    // The leader's alone (passed on under mutex_ with the role).
    std::deque<MuxRequest*> written_;  // replies owed, in the order they come
    std::vector<MuxRequest*> answered_;  // read_one()'s scratch
    std::unique_ptr<Link> link_;
    std::atomic<bool> link_open_{false};
};

}  // namespace retools::detail
