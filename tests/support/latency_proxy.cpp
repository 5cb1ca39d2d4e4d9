#include "latency_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace retools::test {
namespace {

using Clock = std::chrono::steady_clock;

struct Chunk {
    Clock::time_point due;
    std::string bytes;
    std::size_t sent = 0;
};

// One direction of one proxied connection.
struct Flow {
    int from = -1, to = -1;
    std::deque<Chunk> pending;
    bool from_server = false;
};

void set_nonblocking(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int connect_to(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    set_nonblocking(fd);
    return fd;
}

// A proxied connection: both directions; closed as a whole when either side ends.
struct Pair {
    Flow up, down;  // client -> server, server -> client
    bool closed = false;
    ~Pair() {
        ::close(up.from);
        ::close(up.to);
    }
};

// Reads what `f.from` has into a chunk due after `delay`; false at end of stream.
bool pull(Flow& f, std::chrono::microseconds delay) {
    char buf[64 * 1024];
    for (;;) {
        ssize_t n = ::read(f.from, buf, sizeof buf);
        if (n > 0) {
            f.pending.push_back({Clock::now() + delay, std::string(buf, static_cast<std::size_t>(n))});
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

// Writes the chunks that are due; false when the peer is gone.
bool push(Flow& f, bool held) {
    if (held) return true;
    const auto now = Clock::now();
    while (!f.pending.empty() && f.pending.front().due <= now) {
        Chunk& c = f.pending.front();
        ssize_t n = ::send(f.to, c.bytes.data() + c.sent, c.bytes.size() - c.sent, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
        c.sent += static_cast<std::size_t>(n);
        if (c.sent < c.bytes.size()) return true;
        f.pending.pop_front();
    }
    return true;
}

}  // namespace

LatencyProxy::LatencyProxy(int target_port, std::chrono::microseconds one_way)
    : target_port_(target_port), delay_(one_way) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(listen_fd_, 128) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 || ::pipe(wake_) != 0)
        throw std::runtime_error("LatencyProxy: cannot listen on loopback");
    port_ = ntohs(addr.sin_port);
    set_nonblocking(listen_fd_);
    thread_ = std::thread([this] { loop(); });
}

LatencyProxy::~LatencyProxy() {
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
}

void LatencyProxy::loop() {
    std::vector<std::unique_ptr<Pair>> pairs;
    std::vector<pollfd> fds;
    for (;;) {
        // Sleep until a socket is readable or the next chunk is due.
        auto next_due = Clock::time_point::max();
        for (auto& p : pairs)
            for (Flow* f : {&p->up, &p->down})
                if (!f->pending.empty() && !(f->from_server && held_.load()))
                    next_due = std::min(next_due, f->pending.front().due);
        auto wait = std::chrono::microseconds(50000);
        if (next_due != Clock::time_point::max())
            wait = std::clamp(std::chrono::ceil<std::chrono::microseconds>(next_due - Clock::now()),
                              std::chrono::microseconds(0), wait);
        fds.assign({{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}});
        for (auto& p : pairs) {
            fds.push_back({p->up.from, POLLIN, 0});
            fds.push_back({p->down.from, POLLIN, 0});
        }
        const timespec ts{static_cast<time_t>(wait.count() / 1000000), static_cast<long>(wait.count() % 1000000) * 1000};
        ::ppoll(fds.data(), fds.size(), &ts, nullptr);
        if (fds[0].revents != 0) return;
        if (fds[1].revents & POLLIN) {
            for (int c; (c = ::accept(listen_fd_, nullptr, nullptr)) >= 0;) {
                int s = connect_to(target_port_);
                if (s < 0) {
                    ::close(c);
                    continue;
                }
                set_nonblocking(c);
                auto p = std::make_unique<Pair>();
                p->up = {c, s, {}, false};
                p->down = {s, c, {}, true};
                pairs.push_back(std::move(p));
            }
        }
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            Pair& p = *pairs[i];
            const pollfd* pf = i * 2 + 2 < fds.size() ? &fds[i * 2 + 2] : nullptr;
            // A side that hung up cuts the pair: what is still pending is dropped, as a cut cable would.
            if (pf && pf[0].revents && !pull(p.up, delay_)) p.closed = true;
            if (pf && pf[1].revents && !pull(p.down, delay_)) p.closed = true;
            if (!p.closed && (!push(p.up, false) || !push(p.down, held_.load()))) p.closed = true;
        }
        std::erase_if(pairs, [](const std::unique_ptr<Pair>& p) { return p->closed; });
    }
}

}  // namespace retools::test
