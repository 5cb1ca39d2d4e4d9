#include "client/transport.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "client/errors.hpp"
#include "client/tls.hpp"

namespace retools::detail {
namespace {

constexpr std::string_view kClosed = "the server closed the connection";

int remaining_ms(Deadline deadline) {
    if (deadline == Deadline::max()) return -1;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
};

// Finishes a non-blocking connect(); 0 or the errno.
int finish_connect(int fd, Deadline deadline, bool& timed_out) {
    if (!wait_for(fd, POLLOUT, deadline)) {
        timed_out = true;
        return ETIMEDOUT;
    }
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return errno;
    return error;
}

int connect_tcp(const ConnectionOptions& options, Deadline deadline, const std::string& server) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    std::string port = std::to_string(options.port);
    int rc = ::getaddrinfo(options.host.c_str(), port.c_str(), &hints, &found);
    if (rc != 0)
        throw_connection_error(server, "connecting",
                               fmt::format("cannot resolve {:?}: {}", options.host, ::gai_strerror(rc)));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
    int last_error = ECONNREFUSED;
    bool timed_out = false;
    for (addrinfo* a = found; a != nullptr && !timed_out; a = a->ai_next) {
        Fd s{::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol)};
        if (s.fd < 0) {
            last_error = errno;
            continue;
        }
        int error = ::connect(s.fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
        if (error == EINPROGRESS || error == EINTR) error = finish_connect(s.fd, deadline, timed_out);
        if (error != 0) {
            last_error = error;
            continue;
        }
        int one = 1;
        ::setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::setsockopt(s.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);  // notices dead peers
        return s.release();
    }
    if (timed_out) throw_timeout_error(server, "connecting", options.connect_timeout.count());
    throw_system_error(server, "connecting", last_error);
}

int connect_unix(const ConnectionOptions& options, Deadline deadline, const std::string& server) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (options.path.size() >= sizeof address.sun_path)
        throw_connection_error(server, "connecting", "the socket path is too long");
    std::memcpy(address.sun_path, options.path.c_str(), options.path.size() + 1);
    Fd s{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (s.fd < 0) throw_system_error(server, "connecting", errno);
    int error = ::connect(s.fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 ? 0 : errno;
    bool timed_out = false;
    if (error == EINPROGRESS || error == EAGAIN || error == EINTR)
        error = finish_connect(s.fd, deadline, timed_out);
    if (timed_out) throw_timeout_error(server, "connecting", options.connect_timeout.count());
    if (error != 0) throw_system_error(server, "connecting", error);
    return s.release();
}

}  // namespace

Deadline deadline_after(std::chrono::milliseconds timeout) {
    if (timeout.count() <= 0) return Deadline::max();
    return SteadyClock::now() + timeout;
}

bool wait_for(int fd, short events, Deadline deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        int ready = ::poll(&p, 1, remaining_ms(deadline));
        if (ready > 0) return true;
        if (ready == 0) {
            if (deadline != Deadline::max() && SteadyClock::now() >= deadline) return false;
            continue;
        }
        if (errno != EINTR) return true;  // let the following read or write report the error
    }
}

Transport::Transport(int fd, std::string server) : fd_(fd), server_(std::move(server)) {}

Transport::~Transport() {
    tls_.reset();
    if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<Transport> Transport::open(const ConnectionOptions& options, const TlsContext* tls,
                                           std::string server) {
    Deadline deadline = deadline_after(options.connect_timeout);
    int fd = options.path.empty() ? connect_tcp(options, deadline, server)
                                  : connect_unix(options, deadline, server);
    std::unique_ptr<Transport> transport(new Transport(fd, std::move(server)));
    if (tls != nullptr)
        transport->tls_ = std::make_unique<TlsSession>(*tls, fd, options.host, transport->server_, deadline,
                                                       options.connect_timeout.count());
    return transport;
}

void Transport::write(std::span<const std::string_view> parts, Deadline deadline, long long timeout_ms) {
    if (tls_) {
        std::string_view data = parts.empty() ? std::string_view{} : parts[0];
        if (parts.size() > 1) {
            scratch_.clear();
            for (auto part : parts) scratch_.append(part);
            data = scratch_;
        }
        while (!data.empty()) {
            TlsSession::Want want{};
            std::size_t n = tls_->write(data, want);
            data.remove_prefix(n);
            if (n == 0 && !wait_for(fd_, want == TlsSession::Want::read ? POLLIN : POLLOUT, deadline))
                throw_timeout_error(server_, "sending a command", timeout_ms);
        }
        if (scratch_.capacity() > (1 << 20)) std::string().swap(scratch_);
        return;
    }
    // Plain: one sendmsg for all parts; MSG_NOSIGNAL turns a hung-up peer into EPIPE.
    // The parts' iovecs; on the stack for the usual one to three parts.
    iovec small[4];
    std::vector<iovec> large;
    iovec* iov = small;
    if (parts.size() > std::size(small)) {
        large.resize(parts.size());
        iov = large.data();
    }
    std::size_t count = 0;
    for (auto part : parts)
        if (!part.empty()) iov[count++] = {const_cast<char*>(part.data()), part.size()};
    std::size_t first = 0;
    while (first < count) {
        msghdr message{};
        message.msg_iov = iov + first;
        message.msg_iovlen = std::min<std::size_t>(count - first, IOV_MAX);
        ssize_t n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!wait_for(fd_, POLLOUT, deadline))
                    throw_timeout_error(server_, "sending a command", timeout_ms);
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET)
                throw_connection_error(server_, "sending a command", kClosed);
            throw_system_error(server_, "sending a command", errno);
        }
        auto done = static_cast<std::size_t>(n);
        while (first < count && done >= iov[first].iov_len) done -= iov[first++].iov_len;
        if (done > 0) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
            iov[first].iov_len -= done;
        }
    }
}

std::size_t Transport::read(char* buffer, std::size_t capacity, Deadline deadline, long long timeout_ms) {
    auto timed_out = [&] { throw_timeout_error(server_, "reading a reply", timeout_ms); };
    if (tls_) {
        if (!tls_->pending() && !wait_for(fd_, POLLIN, deadline)) timed_out();
        for (;;) {
            TlsSession::Want want{};
            std::size_t n = tls_->read(buffer, capacity, want);
            if (n > 0) return n;
            if (!wait_for(fd_, want == TlsSession::Want::write ? POLLOUT : POLLIN, deadline)) timed_out();
        }
    }
    // A reply is rarely there the instant a command was sent: wait first, then read.
    for (;;) {
        if (!wait_for(fd_, POLLIN, deadline)) timed_out();
        ssize_t n = ::recv(fd_, buffer, capacity, 0);
        if (n > 0) {
            received_any_ = true;
            return static_cast<std::size_t>(n);
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n == 0 || errno == ECONNRESET) {
            if (!received_any_)
                throw_connection_error(server_, "reading a reply",
                                       "the server closed the connection before answering (if it is a TLS "
                                       "port, use rediss:// or ConnectionOptions.tls)");
            throw_connection_error(server_, "reading a reply", kClosed);
        }
        throw_system_error(server_, "reading a reply", errno);
    }
}

bool Transport::buffered() const {
    return tls_ && tls_->pending();
}

bool Transport::idle_and_open() {
    if (tls_) return tls_->idle_and_open();
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, 0);
    if (ready == 0) return true;
    if (ready < 0) return errno == EINTR;
    return false;  // end of stream, an error, or bytes nobody asked for
}

}  // namespace retools::detail
