#include "client/signal_hub.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

#include <retools/detail/command_buffer.hpp>
#include <retools/reply.hpp>

#include "client/link.hpp"

namespace retools::detail {
namespace {

using SteadyClock = std::chrono::steady_clock;

// How long the reader thread outlives the last subscription, and how long it
// waits between two looks at what to (un)subscribe.
constexpr auto kIdleExit = std::chrono::seconds(2);
constexpr int kPollMs = 100;
constexpr auto kIoTimeout = std::chrono::milliseconds(2000);

void signal_fd(int fd) {
    const std::uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
}

}  // namespace

SignalHub::SignalHub(std::function<std::unique_ptr<Link>()> dial) : dial_(std::move(dial)) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

SignalHub::~SignalHub() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    signal_fd(wake_fd_);
    if (thread_.joinable()) thread_.join();
    ::close(wake_fd_);
}

std::size_t SignalHub::confirmed_channels() const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(channels_.begin(), channels_.end(), [](const auto& c) { return c.second.confirmed; }));
}

// Called with mutex_ held. A thread that ended on its own is joined first
// (it holds nothing by then).
void SignalHub::start_locked() {
    if (thread_.joinable()) thread_.join();
    running_ = true;
    thread_ = std::thread([this] { run(); });
}

SignalHub::Subscription::Subscription(SignalHub& hub, const std::string& channel, SignalWake wake)
    : hub_(hub) {
    std::lock_guard lock(hub_.mutex_);
    auto [it, inserted] = hub_.channels_.try_emplace(channel);
    if (inserted) it->second.wake = wake;
    channel_ = it;
    ++it->second.waiters;
    seen_ = it->second.messages;
    if (!it->second.sent) {
        hub_.changed_ = true;
        signal_fd(hub_.wake_fd_);
    }
    if (!hub_.running_ && !hub_.stop_) hub_.start_locked();
}

SignalHub::Subscription::~Subscription() {
    std::lock_guard lock(hub_.mutex_);
    SignalChannel& c = channel_->second;
    --c.waiters;
    c.tokens = std::min(c.tokens, c.waiters);
    if (c.waiters == 0) {
        hub_.changed_ = true;  // the reader unsubscribes it
        signal_fd(hub_.wake_fd_);
    }
}

bool SignalHub::Subscription::wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(hub_.mutex_);
    SignalChannel& c = channel_->second;
    if (c.wake == SignalWake::one) {
        c.arrived.wait_for(lock, timeout, [&] { return c.tokens > 0 || hub_.stop_; });
        if (c.tokens == 0) return false;
        --c.tokens;
        return true;
    }
    const bool woken = c.arrived.wait_for(lock, timeout, [&] { return c.messages != seen_ || hub_.stop_; });
    seen_ = c.messages;
    return woken && !hub_.stop_;
}

void SignalHub::deliver(const std::string& channel) {
    std::lock_guard lock(mutex_);
    auto it = channels_.find(channel);
    if (it == channels_.end()) return;
    SignalChannel& c = it->second;
    ++c.messages;
    if (c.wake == SignalWake::all) {
        c.arrived.notify_all();
    } else if (c.tokens < c.waiters) {
        ++c.tokens;
        c.arrived.notify_one();
    }
}

// Writes SUBSCRIBE for channels with new waiters and UNSUBSCRIBE for those
// left without; forgets the latter. False when there is nothing to listen to.
bool SignalHub::sync_subscriptions(Link& link) {
    std::vector<std::string> subscribe, unsubscribe;
    bool listening = false;
    {
        std::lock_guard lock(mutex_);
        changed_ = false;
        for (auto it = channels_.begin(); it != channels_.end();) {
            SignalChannel& c = it->second;
            if (c.waiters > 0) {
                listening = true;
                if (!c.sent) subscribe.push_back(it->first);
                c.sent = true;
                ++it;
                continue;
            }
            if (c.sent) unsubscribe.push_back(it->first);
            it = channels_.erase(it);
        }
    }
    CommandBuffer request;
    if (!subscribe.empty()) request.add("SUBSCRIBE", subscribe);
    if (!unsubscribe.empty()) request.add("UNSUBSCRIBE", unsubscribe);
    if (!request.empty()) {
        const std::string_view text = request.data();
        link.send({&text, 1}, 0, SteadyClock::now() + kIoTimeout, kIoTimeout.count());
    }
    return listening;
}

// The reader: dials, keeps the subscriptions in step, hands messages out;
// on a failure drops the link and starts again (every channel is subscribed
// anew); ends once nothing has been listened to for kIdleExit.
void SignalHub::run() {
    std::unique_ptr<Link> link;
    auto idle_since = SteadyClock::now();
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stop_) break;
            const bool any = std::any_of(channels_.begin(), channels_.end(),
                                         [](const auto& c) { return c.second.waiters > 0; });
            if (any) {
                idle_since = SteadyClock::now();
            } else if (SteadyClock::now() - idle_since > kIdleExit) {
                channels_.clear();  // none has a waiter
                running_ = false;
                return;
            }
        }
        try {
            if (!link) {
                link = dial_();
                std::lock_guard lock(mutex_);
                for (auto& [name, c] : channels_) c.sent = c.confirmed = false;
            }
            sync_subscriptions(*link);
            pollfd fds[2] = {{link->fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
            if (!link->buffered()) ::poll(fds, 2, kPollMs);
            if (fds[1].revents != 0) {
                std::uint64_t count = 0;
                (void)!::read(wake_fd_, &count, sizeof count);
            }
            while (link->buffered() || fds[0].revents != 0) {
                fds[0].revents = 0;
                const Reply r = link->receive(SteadyClock::now() + kIoTimeout, kIoTimeout.count());
                if (r.is_array() && r.size() >= 3 && r[0].view() == "message") {
                    deliver(std::string(r[1].view()));
                } else if (r.is_array() && r.size() >= 3 && r[0].view() == "subscribe") {
                    std::lock_guard lock(mutex_);
                    auto it = channels_.find(std::string(r[1].view()));
                    if (it != channels_.end()) it->second.confirmed = true;
                }
                ::poll(fds, 1, 0);
            }
        } catch (const std::exception&) {
            link.reset();  // waiters fall back on their timeouts meanwhile
            pollfd wake{wake_fd_, POLLIN, 0};
            ::poll(&wake, 1, kPollMs);  // a short pause before dialing again (stop_ ends it)
            std::uint64_t count = 0;
            (void)!::read(wake_fd_, &count, sizeof count);
        }
    }
}

}  // namespace retools::detail
