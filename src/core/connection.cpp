#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "core/connection_impl.hpp"
#include "core/errors.hpp"

namespace retools {
namespace {

std::unique_ptr<const detail::TlsContext> make_tls(const ConnectionOptions& options) {
    if (!options.tls) return nullptr;
    return std::make_unique<detail::TlsContext>(*options.tls);
}

}  // namespace

Connection::Impl::Impl(ConnectionOptions o)
    : options(std::move(o)), tls(make_tls(options)), pool(new Pool(getpid())) {}

Connection::Impl::~Impl() {
    Pool* p = pool.load();
    if (p->pid == getpid()) delete p;  // a forked child's copy of the parent's pool is left alone
}

Connection::Impl::Pool& Connection::Impl::current_pool() {
    Pool* p = pool.load(std::memory_order_acquire);
    pid_t me = getpid();
    if (p->pid == me) return *p;
    auto* fresh = new Pool(me);
    if (pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread of this child won
    return *p;
}

std::unique_ptr<detail::Link> Connection::Impl::dial() const {
    return detail::Link::open(options, tls.get());
}

bool Connection::Impl::still_good(detail::Link& link) const {
    if (options.max_idle.count() > 0 && detail::SteadyClock::now() - link.idle_since > options.max_idle)
        return false;
    // A restart, CLIENT KILL or the server's timeout may have closed it while
    // it was idle, however briefly: one non-blocking poll tells.
    return link.idle_and_open();
}

Connection::Impl::Lease::Lease(Impl& impl) : impl_(impl), pool_(impl.current_pool()) {
    const auto& options = impl_.options;
    for (;;) {
        {
            std::unique_lock lock(pool_.mutex);
            if (pool_.idle.empty() && pool_.open >= options.pool_size) {
                auto ready = [&] { return !pool_.idle.empty() || pool_.open < options.pool_size; };
                auto wait = options.command_timeout;
                if (wait.count() > 0) {
                    if (!pool_.available.wait_for(lock, wait, ready))
                        throw TimeoutError(
                            fmt::format("Redis {}: all {} pooled connections stayed busy for {} ms",
                                        options.describe(), options.pool_size, wait.count()));
                } else {
                    pool_.available.wait(lock, ready);
                }
            }
            if (pool_.idle.empty()) {
                ++pool_.open;
                break;  // dial a new one, outside the lock
            }
            link_ = std::move(pool_.idle.back());
            pool_.idle.pop_back();
        }
        if (impl_.still_good(*link_)) return;
        link_.reset();  // closed by the server: replace it
        std::lock_guard lock(pool_.mutex);
        --pool_.open;
    }
    try {
        link_ = impl_.dial();
    } catch (...) {
        std::lock_guard lock(pool_.mutex);
        --pool_.open;
        pool_.available.notify_one();
        throw;
    }
}

Connection::Impl::Lease::~Lease() {
    std::unique_ptr<detail::Link> closing;
    {
        std::lock_guard lock(pool_.mutex);
        if (link_ && link_->reusable()) {
            if (impl_.options.max_idle.count() > 0) link_->idle_since = detail::SteadyClock::now();
            pool_.idle.push_back(std::move(link_));
        } else {
            closing = std::move(link_);
            --pool_.open;
        }
    }
    pool_.available.notify_one();
}

namespace {

const std::string_view kMulti = "*1\r\n$5\r\nMULTI\r\n";
const std::string_view kExec = "*1\r\n$4\r\nEXEC\r\n";

}  // namespace

Connection::Connection() : Connection(ConnectionOptions{}) {}

Connection::Connection(ConnectionOptions options) {
    if (options.pool_size == 0) throw ConfigurationError("ConnectionOptions.pool_size must be at least 1");
    if (options.path.empty() && options.host.empty())
        throw ConfigurationError("ConnectionOptions.host is empty");
    if (options.path.empty() && (options.port <= 0 || options.port > 65535))
        throw ConfigurationError(
            fmt::format("ConnectionOptions.port {} is not from 1 to 65535", options.port));
    if (options.db < 0)
        throw ConfigurationError(fmt::format("ConnectionOptions.db {} is negative", options.db));
    if (options.connect_timeout.count() < 0 || options.command_timeout.count() < 0)
        throw ConfigurationError("ConnectionOptions timeouts must not be negative");
    if (options.max_idle.count() < 0)
        throw ConfigurationError("ConnectionOptions.max_idle must not be negative");
    if (options.tls && !options.path.empty())
        throw ConfigurationError("ConnectionOptions.tls is not supported over a Unix socket (path)");
    impl_ = std::make_shared<Impl>(std::move(options));
}

Connection::Connection(std::string_view url) : Connection(ConnectionOptions::from_url(url)) {}

const ConnectionOptions& Connection::options() const noexcept {
    return impl_->options;
}

std::uint64_t Connection::round_trips() const noexcept {
    return impl_->round_trips.load(std::memory_order_relaxed);
}

std::size_t Connection::open_connections() const noexcept {
    Impl::Pool& pool = impl_->current_pool();
    std::lock_guard lock(pool.mutex);
    return pool.open;
}

void Connection::reset() const {
    Impl::Pool& pool = impl_->current_pool();
    std::vector<std::unique_ptr<detail::Link>> closing;
    {
        std::lock_guard lock(pool.mutex);
        closing.swap(pool.idle);
        pool.open -= closing.size();
    }
    pool.available.notify_all();
}

Reply Connection::execute_one(const detail::CommandBuffer& buffer, std::chrono::milliseconds block) const {
    auto timeout = impl_->options.command_timeout;
    if (timeout.count() > 0 && block.count() > 0) timeout += block;  // the server holds the reply that long
    Impl::Lease lease(*impl_);
    impl_->round_trips.fetch_add(1, std::memory_order_relaxed);
    detail::Deadline deadline = detail::deadline_after(timeout);
    std::string_view request = buffer.data();
    lease.link().send({&request, 1}, 1, deadline, timeout.count());
    return lease.link().receive(deadline, timeout.count());
}

std::vector<Reply> Connection::execute(const Pipeline& pipeline) const {
    const auto& buffer = pipeline.buffer();
    if (buffer.empty()) return {};
    auto timeout = impl_->options.command_timeout;
    Impl::Lease lease(*impl_);
    impl_->round_trips.fetch_add(1, std::memory_order_relaxed);
    detail::Deadline deadline = detail::deadline_after(timeout);
    std::string_view request = buffer.data();
    lease.link().send({&request, 1}, buffer.commands(), deadline, timeout.count());
    std::vector<Reply> replies;
    replies.reserve(buffer.commands());
    for (std::size_t i = 0; i < buffer.commands(); ++i)
        replies.push_back(lease.link().receive(deadline, timeout.count()));
    return replies;
}

std::vector<Reply> Connection::transaction(const Pipeline& pipeline) const {
    const auto& buffer = pipeline.buffer();
    if (buffer.empty()) return {};
    auto timeout = impl_->options.command_timeout;
    Reply exec;
    {
        Impl::Lease lease(*impl_);
        impl_->round_trips.fetch_add(1, std::memory_order_relaxed);
        detail::Deadline deadline = detail::deadline_after(timeout);
        const std::string_view parts[] = {kMulti, buffer.data(), kExec};
        detail::Link& link = lease.link();
        link.send(parts, buffer.commands() + 2, deadline, timeout.count());
        // Every reply is read before anything throws, so the link stays reusable.
        Reply multi = link.receive(deadline, timeout.count());  // +OK
        std::optional<Reply> rejected;
        for (std::size_t i = 0; i < buffer.commands(); ++i) {
            Reply queued = link.receive(deadline, timeout.count());
            if (queued.is_error() && !rejected) rejected = queued;
        }
        exec = link.receive(deadline, timeout.count());
        multi.check();
        if (rejected) rejected->check();
    }
    exec.check();
    if (exec.is_nil()) detail::throw_reply_error("transaction aborted: a watched key changed");
    return exec.as_array();
}

Connection& global_connection() {
    static Connection instance = [] {
        const char* url = std::getenv("REDIS_URL");
        return url && *url ? Connection(std::string_view(url)) : Connection();
    }();
    return instance;
}

}  // namespace retools
