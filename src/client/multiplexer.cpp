#include "client/multiplexer.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>

#include <retools/errors.hpp>

#include "client/health.hpp"

namespace retools::detail {
namespace {

// A copy of the failure `error` for one more caller: its own object with its
// own message, so callers on several threads never share (nor free) one
// exception object or its reference-counted message.
std::exception_ptr own_copy(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const AuthenticationError& e) {
        return std::make_exception_ptr(AuthenticationError(std::string(e.what()), e.maybe_executed()));
    } catch (const TimeoutError& e) {
        return std::make_exception_ptr(TimeoutError(std::string(e.what()), e.maybe_executed()));
    } catch (const ConnectionError& e) {
        return std::make_exception_ptr(ConnectionError(std::string(e.what()), e.maybe_executed()));
    } catch (const ConfigurationError& e) {
        return std::make_exception_ptr(ConfigurationError(std::string(e.what())));
    } catch (const ReplyError& e) {
        return std::make_exception_ptr(ReplyError(std::string(e.what())));
    } catch (const Error& e) {
        return std::make_exception_ptr(Error(std::string(e.what())));
    } catch (...) {
        return std::current_exception();  // std::bad_alloc and the like carry no message
    }
}

}  // namespace

Multiplexer::Multiplexer(HealthGate& health, std::function<std::unique_ptr<Link>()> dial,
                         std::function<bool(Link&)> reusable)
    : health_(health), dial_(std::move(dial)), reusable_(std::move(reusable)) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

Multiplexer::~Multiplexer() {
    ::close(wake_fd_);
}

bool Multiplexer::run(MuxRequest& r) {
    std::unique_lock lock(mutex_);
    queued_.push_back(&r);
    if (leader_polling_ && !wake_sent_) {
        wake_sent_ = true;
        const std::uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
    }
    if (leading_) {
        // One wake-up: the reply is in, the request failed, or the role is ours.
        r.wake.wait(lock, [&] { return r.state != MuxRequest::State::queued || r.lead; });
        if (r.state == MuxRequest::State::queued) lead(lock, r);
    } else {
        leading_ = true;
        lead(lock, r);
    }
    if (r.state == MuxRequest::State::bounced) return false;
    if (r.error) std::rethrow_exception(r.error);
    return true;
}

bool Multiplexer::open() const noexcept {
    return link_open_.load(std::memory_order_relaxed);
}

void Multiplexer::reset() noexcept {
    std::lock_guard lock(mutex_);
    if (leading_) {
        drop_link_ = true;  // the leader closes it before its next write on an idle link
        return;
    }
    link_.reset();
    link_open_.store(false, std::memory_order_relaxed);
}

// The leader's loop: write what is queued, read the next reply owed, until
// `mine` is answered; then pass the role on. Entered and left with `lock` held.
void Multiplexer::lead(std::unique_lock<std::mutex>& lock, MuxRequest& mine) {
    mine.lead = false;
    while (mine.state == MuxRequest::State::queued) {
        if (!queued_.empty()) {
            write_queued(lock);
            continue;  // `mine` may have been written, failed or bounced
        }
        if (written_.empty()) break;  // cannot happen: `mine` is queued or written
        lock.unlock();
        bool reply = reply_soon();
        lock.lock();
        if (!reply) {
            if (!queued_.empty()) continue;  // write them before waiting longer
            leader_polling_ = true;          // from now on a new request wakes us
            lock.unlock();
            reply = wait_for_reply();
            lock.lock();
            leader_polling_ = false;
            wake_sent_ = false;
            if (!reply) continue;  // new requests to write first
        }
        lock.unlock();
        read_one();
        lock.lock();
    }
    hand_off();
}

// Takes everything queued and writes it in one write (or finishes each
// request with the failure to find a link for it).
void Multiplexer::write_queued(std::unique_lock<std::mutex>& lock) {
    std::vector<MuxRequest*> batch(queued_.begin(), queued_.end());
    queued_.clear();
    const bool drop = drop_link_ && written_.empty();
    if (drop) drop_link_ = false;
    lock.unlock();
    if (drop && link_) {
        link_.reset();
        link_open_.store(false, std::memory_order_relaxed);
    }
    if (prepare_link(batch)) {
        std::vector<std::string_view> parts;
        std::size_t replies = 0;
        Deadline deadline = Deadline::max();
        long long timeout_ms = 0;
        for (MuxRequest* r : batch) {
            parts.insert(parts.end(), r->parts.begin(), r->parts.end());
            replies += r->replies;
            if (r->deadline < deadline) {
                deadline = r->deadline;
                timeout_ms = r->timeout_ms;
            }
            r->generation = link_->generation;
            written_.push_back(r);
        }
        try {
            link_->send(parts, replies, deadline, timeout_ms);
        } catch (...) {
            fail_written(std::current_exception());
        }
    }
    lock.lock();
}

// A link to write `batch` on: the current one, or a new one. An idle link the
// server closed (or from before a failover) is replaced first. While the
// server is down nothing is dialed: the batch goes back to its callers.
bool Multiplexer::prepare_link(std::vector<MuxRequest*>& batch) {
    if (link_ && written_.empty() && !reusable_(*link_)) {
        link_.reset();
        link_open_.store(false, std::memory_order_relaxed);
    }
    if (link_) return true;
    if (health_.down()) {
        for (MuxRequest* r : batch) finish(*r, MuxRequest::State::bounced);
        return false;
    }
    try {
        link_ = dial_();
        link_open_.store(true, std::memory_order_relaxed);
        return true;
    } catch (...) {
        const std::exception_ptr error = std::current_exception();
        for (MuxRequest* r : batch) {
            r->error = own_copy(error);
            finish(*r, MuxRequest::State::done);
        }
        return false;
    }
}

// Whether a reply is there or comes within a short while (on loopback most
// do): waiting this long without being woken for new requests saves their
// callers a wake-up of the leader each, and delays them by at most that.
bool Multiplexer::reply_soon() {
    if (link_->buffered()) return true;
    pollfd fd{link_->fd(), POLLIN, 0};
    const timespec soon{0, 100 * 1000};  // 100 µs
    return ::ppoll(&fd, 1, &soon, nullptr) > 0;
}

// Waits until the socket has a reply (true; also when the oldest request's
// deadline has passed, for receive() to report it) or a new request was
// queued (false).
bool Multiplexer::wait_for_reply() {
    if (link_->buffered()) return true;
    const Deadline deadline = written_.front()->deadline;
    pollfd fds[2] = {{link_->fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int timeout_ms = -1;
    if (deadline != Deadline::max()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
        if (left.count() <= 0) return true;
        timeout_ms = static_cast<int>(std::min<long long>(left.count(), 60000));
    }
    const int ready = ::poll(fds, 2, timeout_ms);
    if (fds[1].revents != 0) {
        std::uint64_t count = 0;
        (void)!::read(wake_fd_, &count, sizeof count);
    }
    return ready == 0 || fds[0].revents != 0;
}

// Reads the replies of the oldest written request, and of the next ones
// while their bytes are already in, and hands them over under one lock.
void Multiplexer::read_one() {
    std::vector<MuxRequest*>& answered = answered_;
    answered.clear();
    do {
        MuxRequest& r = *written_.front();
        try {
            link_->receive_many(r.replies, r.deadline, r.timeout_ms, r.out);
        } catch (...) {
            finish_all(answered);
            fail_written(std::current_exception());
            return;
        }
        written_.pop_front();
        answered.push_back(&r);
    } while (!written_.empty() && link_->buffered());
    if (written_.empty()) link_->idle_since = SteadyClock::now();
    finish_all(answered);
}

void Multiplexer::finish_all(const std::vector<MuxRequest*>& answered) {
    std::lock_guard lock(mutex_);
    for (MuxRequest* r : answered) {
        r->state = MuxRequest::State::done;
        r->wake.notify_one();  // under the mutex: the waiter cannot destroy `wake` meanwhile
    }
}

// The link failed: every request written on it gets the failure (each may
// have run) and the link is closed.
void Multiplexer::fail_written(std::exception_ptr error) {
    link_.reset();
    link_open_.store(false, std::memory_order_relaxed);
    std::deque<MuxRequest*> failed;
    failed.swap(written_);
    for (MuxRequest* r : failed) {
        r->error = own_copy(error);
        finish(*r, MuxRequest::State::done);
    }
}

// Wakes r's caller; after this the request may be gone (its caller returns).
void Multiplexer::finish(MuxRequest& r, MuxRequest::State state) {
    std::lock_guard lock(mutex_);
    r.state = state;
    r.wake.notify_one();  // under the mutex: the waiter cannot destroy `wake` meanwhile
}

// The leader is done: the caller whose reply comes next (else the oldest
// queued one) takes over the I/O. Called with mutex_ held.
void Multiplexer::hand_off() {
    MuxRequest* next = !written_.empty() ? written_.front() : !queued_.empty() ? queued_.front() : nullptr;
    if (next == nullptr) {
        leading_ = false;
        return;
    }
    next->lead = true;  // leading_ stays true: nobody else may take the role meanwhile
    next->wake.notify_one();
}

}  // namespace retools::detail
