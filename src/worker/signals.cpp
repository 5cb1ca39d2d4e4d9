// Signals for working workers: the handler only writes the signal number to
// each watcher's pipe (async-signal-safe); a thread per watcher reads it and
// acts with ordinary code.

#include "worker/signals.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include <retools/errors.hpp>

namespace retools::detail {

namespace {

constexpr std::array<int, 6> handled = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT};
constexpr int max_watchers = 32;

// Write ends of the watchers' pipes, plus one (0 = free slot). Read by the
// handler, so lock-free atomics only.
std::atomic<int> watcher_fds[max_watchers];

// Handlers running right now: a watcher closes its pipe only when none is,
// so a late handler never writes into a reused descriptor.
std::atomic<int> handlers_running{0};

std::mutex install_mutex;
int installed_count = 0;
std::array<struct sigaction, handled.size()> previous{};

extern "C" void retools_worker_on_signal(int sig) {
    int saved = errno;
    handlers_running.fetch_add(1, std::memory_order_acq_rel);
    auto byte = static_cast<unsigned char>(sig);
    for (auto& slot : watcher_fds) {
        int fd = slot.load(std::memory_order_acquire) - 1;
        if (fd >= 0) {
            [[maybe_unused]] auto n =
                ::write(fd, &byte, 1);  // non-blocking; a full pipe already has a wake-up
        }
    }
    handlers_running.fetch_sub(1, std::memory_order_acq_rel);
    errno = saved;
}

void install_handlers() {
    struct sigaction sa {};
    sa.sa_handler = retools_worker_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (std::size_t i = 0; i < handled.size(); ++i) ::sigaction(handled[i], &sa, &previous[i]);
}

void restore_handlers() {
    for (std::size_t i = 0; i < handled.size(); ++i) ::sigaction(handled[i], &previous[i], nullptr);
}

}  // namespace

SignalWatcher::SignalWatcher(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0)
        throw Error(fmt::format("retools: cannot create the worker's signal pipe: {}", std::strerror(errno)));
    std::lock_guard lock(install_mutex);
    for (int i = 0; i < max_watchers; ++i) {
        int expected = 0;
        if (watcher_fds[i].compare_exchange_strong(expected, fds_[1] + 1)) {
            slot_ = i;
            break;
        }
    }
    if (slot_ < 0) {
        ::close(fds_[0]);
        ::close(fds_[1]);
        throw ConfigurationError(
            fmt::format("retools: more than {} workers handle signals in this process", max_watchers));
    }
    if (installed_count++ == 0) install_handlers();
    thread_ = std::thread([this] {
        for (;;) {
            pollfd p{fds_[0], POLLIN, 0};
            if (::poll(&p, 1, -1) < 0 && errno != EINTR) return;
            unsigned char buf[64];
            ssize_t n = ::read(fds_[0], buf, sizeof buf);
            if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                return;
            }
            for (ssize_t i = 0; i < n; ++i) {
                if (buf[i] == 0) return;  // the destructor's stop byte
                on_signal_(buf[i]);
            }
        }
    });
}

SignalWatcher::~SignalWatcher() {
    {
        std::lock_guard lock(install_mutex);
        watcher_fds[slot_].store(0, std::memory_order_release);
        if (--installed_count == 0) restore_handlers();
    }
    unsigned char stop = 0;
    while (::write(fds_[1], &stop, 1) < 0 && errno == EINTR) {}
    thread_.join();
    while (handlers_running.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    ::close(fds_[0]);
    ::close(fds_[1]);
}

void reset_worker_signals() noexcept {
    // A terminal's Ctrl-C / Ctrl-\ and a `kill` of the process group reach the
    // job processes too: they ignore what is meant for the worker (INT, QUIT,
    // USR1, USR2), which decides their fate and kills them with TERM if need be.
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    for (int sig : handled) {
        sa.sa_handler = (sig == SIGTERM || sig == SIGCONT) ? SIG_DFL : SIG_IGN;
        ::sigaction(sig, &sa, nullptr);
    }
    for (auto& slot : watcher_fds) slot.store(0, std::memory_order_relaxed);
    sigset_t all;
    sigemptyset(&all);
    for (int sig : handled) sigaddset(&all, sig);
    ::pthread_sigmask(SIG_UNBLOCK, &all, nullptr);
}

}  // namespace retools::detail
