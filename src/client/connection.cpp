#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include <fmt/format.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "client/command_table.hpp"
#include "client/connection_access.hpp"
#include "client/connection_impl.hpp"
#include "client/errors.hpp"

namespace retools {
namespace {

std::unique_ptr<const detail::TlsContext> make_tls(const ConnectionOptions& options) {
    if (!options.tls) return nullptr;
    return std::make_unique<detail::TlsContext>(*options.tls);
}

}  // namespace

Connection::Impl::Impl(ConnectionOptions o)
    : options(std::move(o)), tls(make_tls(options)), pool(make_pool(getpid())) {}

Connection::Impl::~Impl() {
    Pool* p = pool.load();
    if (p->pid == getpid()) delete p;  // a forked child's copy of the parent's pool is left alone
}

Connection::Impl::Pool& Connection::Impl::current_pool() {
    Pool* p = pool.load(std::memory_order_acquire);
    pid_t me = getpid();
    if (p->pid == me) return *p;
    auto* fresh = make_pool(me);
    if (pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread of this child won
    return *p;
}

namespace {

// How long a probe may take before another call may probe instead: its dial
// (with Sentinel, waiting for the master too) and its PING.
std::chrono::milliseconds probe_limit(const ConnectionOptions& o) {
    const auto round_trip =
        o.command_timeout.count() > 0 ? o.command_timeout : std::chrono::milliseconds(5000);
    return o.connect_timeout + 2 * round_trip + std::chrono::milliseconds(1000);
}

}  // namespace

Connection::Impl::Pool::Pool(pid_t owner, const ConnectionOptions& options)
    : pid(owner), health(options.describe(), options.reconnect_backoff_max, probe_limit(options)) {}

Connection::Impl::Pool* Connection::Impl::make_pool(pid_t owner) {
    auto p = std::make_unique<Pool>(owner, options);
    if (options.sentinel) p->sentinel = std::make_unique<detail::SentinelMonitor>(options, tls.get());
    if (options.cluster) p->cluster = std::make_unique<detail::ClusterRouter>(options, round_trips);
    Pool* fresh = p.get();
    if (!options.cluster)
        p->signals = std::make_unique<detail::SignalHub>([this, fresh] {
            bool probe = false;
            return dial_checked(*fresh, probe);
        });
    if (options.multiplex && !options.cluster) {
        p->mux = std::make_unique<detail::Multiplexer>(
            fresh->health,
            [this, fresh] {
                bool probe = false;
                return dial_checked(*fresh, probe);
            },
            [this, fresh](detail::Link& link) {
                // In Sentinel mode a link opened before a failover may lead to the old master.
                return (!fresh->sentinel || link.generation == fresh->sentinel->generation()) &&
                       still_good(link);
            });
    }
    return p.release();
}

std::unique_ptr<detail::Link> Connection::Impl::dial(Pool& owner) const {
    if (!owner.sentinel) return detail::Link::open(options, tls.get());
    // While a failover is under way this waits for it, as long as a call may take.
    auto wait =
        options.command_timeout.count() > 0 ? options.command_timeout : std::chrono::milliseconds(60000);
    auto master = owner.sentinel->master(wait);
    ConnectionOptions node = options;
    node.sentinel.reset();
    node.host = master.address.host;
    node.port = master.address.port;
    try {
        auto link = detail::Link::open(node, tls.get());
        link->generation = master.generation;
        return link;
    } catch (const ConnectionError&) {
        owner.sentinel->suspect(master.generation);
        throw;
    }
}

// A dial that fails (refused, timed out, a TLS failure) sent nothing and
// tells the gate the server is down; a refused AUTH means it is up. Not with
// Sentinel: there a failed dial makes the monitor suspect the master, and the
// next dials wait for the sentinels' answer (a failover) instead of failing
// fast through it.
std::unique_ptr<detail::Link> Connection::Impl::dial_checked(Pool& owner, bool& probe) const {
    std::unique_ptr<detail::Link> link;
    try {
        link = dial(owner);
    } catch (ConnectionError& e) {
        detail::ErrorAccess::mark_not_sent(e);
        if (!owner.sentinel && dynamic_cast<const AuthenticationError*>(&e) == nullptr) {
            owner.health.failed(e.what(), probe);
            probe = false;
        }
        throw;
    }
    link->health = &owner.health;
    return link;
}

bool Connection::Impl::admit(Pool& owner) {
    if (owner.sentinel) {
        const std::uint64_t now_serving = owner.sentinel->generation();
        if (owner.health_generation.exchange(now_serving) != now_serving) owner.health.reset();
    }
    return owner.health.admit();
}

bool Connection::Impl::still_good(detail::Link& link) const {
    if (options.max_idle.count() > 0 && detail::SteadyClock::now() - link.idle_since > options.max_idle)
        return false;
    // A restart, CLIENT KILL or the server's timeout may have closed it while
    // it was idle, however briefly: one non-blocking poll tells.
    return link.idle_and_open();
}

Connection::Impl::Lease::Lease(Impl& impl, std::optional<bool> admitted)
    : impl_(impl), pool_(impl.current_pool()) {
    probe_ = admitted ? *admitted : Impl::admit(pool_);
    try {
        take_or_dial();
        if (probe_) probe();
    } catch (...) {
        if (probe_) pool_.health.abandon_probe();
        give_back();
        throw;
    }
}

Connection::Impl::Lease::~Lease() {
    give_back();
}

void Connection::Impl::Lease::take_or_dial() {
    const auto& opts = impl_.options;
    for (;;) {
        {
            std::unique_lock lock(pool_.mutex);
            if (pool_.idle.empty() && pool_.open >= opts.pool_size) {
                // A server found down wakes the waiters: they fail fast rather than wait for a link.
                auto ready = [&] {
                    return !pool_.idle.empty() || pool_.open < opts.pool_size ||
                           (!probe_ && pool_.health.down());
                };
                auto wait = opts.command_timeout;
                if (wait.count() > 0) {
                    if (!pool_.available.wait_for(lock, wait, ready))
                        throw TimeoutError(
                            fmt::format("Redis {}: all {} pooled connections stayed busy for {} ms",
                                        opts.describe(), opts.pool_size, wait.count()),
                            false);
                } else {
                    pool_.available.wait(lock, ready);
                }
                if (!probe_ && pool_.health.down()) {
                    lock.unlock();
                    probe_ = Impl::admit(pool_);  // throws, or makes this call the probe
                    continue;
                }
            }
            if (pool_.idle.empty()) {
                ++pool_.open;
                break;  // dial a new one, outside the lock
            }
            link_ = std::move(pool_.idle.back());
            pool_.idle.pop_back();
        }
        // In Sentinel mode a link opened before a failover may lead to the old master.
        const bool current = !pool_.sentinel || link_->generation == pool_.sentinel->generation();
        if (current && impl_.still_good(*link_)) return;
        link_.reset();  // closed by the server: replace it
        std::lock_guard lock(pool_.mutex);
        --pool_.open;
    }
    dial();
}

// A new link (see dial_checked); the slot counted in pool_.open is given back if it fails.
void Connection::Impl::Lease::dial() {
    try {
        link_ = impl_.dial_checked(pool_, probe_);
    } catch (...) {
        std::lock_guard lock(pool_.mutex);
        --pool_.open;
        pool_.available.notify_one();
        throw;
    }
}

// The probe: a PING within the command timeout before the caller's request
// goes out, since a hung server may still accept connections. Its answer
// (any reply) makes the server healthy again (the link tells the gate).
void Connection::Impl::Lease::probe() {
    static constexpr std::string_view kPing = "*1\r\n$4\r\nPING\r\n";
    const auto& opts = impl_.options;
    const auto timeout =
        opts.command_timeout.count() > 0 ? opts.command_timeout : std::chrono::milliseconds(5000);
    try {
        (void)link_->call(kPing, timeout);
    } catch (TimeoutError& e) {
        detail::ErrorAccess::mark_not_sent(e);
        pool_.health.failed(e.what(), true);
        probe_ = false;
        throw;
    } catch (ConnectionError& e) {
        detail::ErrorAccess::mark_not_sent(e);
        throw;
    }
    probe_ = false;
}

void Connection::Impl::Lease::give_back() noexcept {
    if (!link_) return;
    std::unique_ptr<detail::Link> closing;
    {
        std::lock_guard lock(pool_.mutex);
        if (link_->reusable()) {
            if (impl_.options.max_idle.count() > 0) link_->idle_since = detail::SteadyClock::now();
            pool_.idle.push_back(std::move(link_));
        } else {
            closing = std::move(link_);
            --pool_.open;
        }
    }
    if (pool_.health.down()) {
        pool_.available.notify_all();
    } else {
        pool_.available.notify_one();
    }
}

namespace {

const std::string_view kMulti = "*1\r\n$5\r\nMULTI\r\n";
const std::string_view kExec = "*1\r\n$4\r\nEXEC\r\n";

}  // namespace

Connection::Connection() : Connection(ConnectionOptions{}) {}

Connection::Connection(ConnectionOptions options) {
    if (options.pool_size == 0) throw ConfigurationError("ConnectionOptions.pool_size must be at least 1");
    if (options.path.empty() && options.host.empty() && !options.cluster)
        throw ConfigurationError("ConnectionOptions.host is empty");
    if (options.path.empty() && !options.cluster && (options.port <= 0 || options.port > 65535))
        throw ConfigurationError(
            fmt::format("ConnectionOptions.port {} is not from 1 to 65535", options.port));
    if (options.db < 0)
        throw ConfigurationError(fmt::format("ConnectionOptions.db {} is negative", options.db));
    if (options.connect_timeout.count() < 0 || options.command_timeout.count() < 0)
        throw ConfigurationError("ConnectionOptions timeouts must not be negative");
    if (options.max_idle.count() < 0)
        throw ConfigurationError("ConnectionOptions.max_idle must not be negative");
    if (options.reconnect_backoff_max.count() < 0)
        throw ConfigurationError("ConnectionOptions.reconnect_backoff_max must not be negative");
    if (options.sentinel) detail::validate_sentinel(options);
    if (options.cluster) detail::validate_cluster(options);
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

std::uint64_t Connection::master_switches() const noexcept {
    Impl::Pool& pool = impl_->current_pool();
    return pool.sentinel ? pool.sentinel->switches() : 0;
}

bool Connection::healthy() const {
    Impl::Pool& pool = impl_->current_pool();
    if (pool.cluster) return pool.cluster->healthy();
    return !pool.health.down();
}

std::size_t Connection::open_connections() const noexcept {
    Impl::Pool& pool = impl_->current_pool();
    if (pool.cluster) return pool.cluster->open_connections();
    const std::size_t shared = pool.mux && pool.mux->open() ? 1 : 0;
    std::lock_guard lock(pool.mutex);
    return pool.open + shared;
}

void Connection::reset() const {
    Impl::Pool& pool = impl_->current_pool();
    if (pool.cluster) pool.cluster->reset();
    std::vector<std::unique_ptr<detail::Link>> closing;
    {
        std::lock_guard lock(pool.mutex);
        closing.swap(pool.idle);
        pool.open -= closing.size();
    }
    pool.available.notify_all();
    if (pool.mux) pool.mux->reset();
}

namespace {

// Requests this long or longer go on a link of their own rather than delay
// everyone else's on the shared one.
constexpr std::size_t kLargeCommands = 1000;
constexpr std::size_t kLargeBytes = std::size_t{1} << 20;

bool shareable(std::string_view request, std::size_t commands) {
    return commands < kLargeCommands && request.size() < kLargeBytes && !detail::needs_own_link(request);
}

}  // namespace

std::vector<Reply> Connection::Impl::round_trip(std::span<const std::string_view> parts, std::size_t replies,
                                                std::chrono::milliseconds timeout, bool shareable_request,
                                                std::uint64_t& generation) {
    Pool& mine = current_pool();
    round_trips.fetch_add(1, std::memory_order_relaxed);
    std::optional<bool> probe;
    if (mine.mux && shareable_request) {
        for (;;) {
            probe = admit(mine);
            if (*probe) break;  // the probe goes on a leased link, after its PING
            detail::MuxRequest request;
            request.parts = parts;
            request.replies = replies;
            request.deadline = detail::deadline_after(timeout);
            request.timeout_ms = timeout.count();
            if (mine.mux->run(request)) {
                generation = request.generation;
                return std::move(request.out);
            }
            // Bounced: the server went down before it was written; ask again.
        }
    }
    Lease lease(*this, probe);
    detail::Link& link = lease.link();
    generation = link.generation;
    const detail::Deadline deadline = detail::deadline_after(timeout);
    link.send(parts, replies, deadline, timeout.count());
    std::vector<Reply> out;
    link.receive_many(replies, deadline, timeout.count(), out);
    return out;
}

// Runs `attempt`. In Sentinel mode a failure that shows a failover (a broken
// link, a READONLY / LOADING / MASTERDOWN refusal, which `refusal` picks out
// of the result) makes the monitor ask the sentinels again, and the call is
// made once more, on the new master, only when that cannot run it twice:
// nothing had been sent (maybe_executed() false), the node refused it
// unexecuted, or `request` only reads. Otherwise the caller gets one
// ConnectionError and the next call goes to the new master.
template <class Attempt, class Refusal>
auto Connection::Impl::with_failover(std::string_view request, Attempt&& attempt, Refusal&& refusal) {
    Pool& mine = current_pool();
    std::uint64_t generation = 0;
    if (!mine.sentinel) return attempt(generation);
    for (int round = 0;; ++round) {
        const bool last = round > 0;
        try {
            auto result = attempt(generation);
            const Reply* refused = refusal(result);
            if (refused == nullptr) return result;
            mine.sentinel->suspect(generation);
            if (last)
                detail::throw_connection_error(
                    options.describe(), "failing over",
                    fmt::format("{} (after asking the sentinels again)", refused->error_message()));
        } catch (const ConnectionError& e) {
            if (last) throw;
            if (!e.maybe_executed()) continue;  // nothing was sent
            mine.sentinel->suspect(generation);
            if (!detail::read_only_request(request)) throw;
        }
    }
}

namespace {

const Reply* refused_reply(const Reply& reply) {
    return detail::failover_reply(reply) ? &reply : nullptr;
}

const Reply* refused_replies(const std::vector<Reply>& replies) {
    for (const Reply& r : replies)
        if (detail::failover_reply(r)) return &r;
    return nullptr;
}

}  // namespace

Reply detail::send_command(const Connection& conn, const CommandBuffer& buffer,
                           std::optional<std::string_view> key, std::chrono::milliseconds block) {
    ConnectionAccess::Impl& impl = ConnectionAccess::impl(conn);
    if (auto* cluster = impl.current_pool().cluster.get()) return cluster->execute_one(buffer, block, key);
    auto timeout = impl.options.command_timeout;
    if (timeout.count() > 0 && block.count() > 0) timeout += block;  // the server holds the reply that long
    std::string_view request = buffer.data();
    const bool shared = block.count() == 0 && shareable(request, 1);
    return impl.with_failover(
        request,
        [&](std::uint64_t& generation) {
            return std::move(impl.round_trip({&request, 1}, 1, timeout, shared, generation).front());
        },
        refused_reply);
}

std::vector<Reply> Connection::execute(const Pipeline& pipeline) const {
    const auto& buffer = detail::ConnectionAccess::buffer(pipeline);
    if (buffer.empty()) return {};
    if (auto* cluster = impl_->current_pool().cluster.get()) return cluster->execute(pipeline);
    std::string_view request = buffer.data();
    const bool shared = shareable(request, buffer.commands());
    return impl_->with_failover(
        request,
        [&](std::uint64_t& generation) {
            return impl_->round_trip({&request, 1}, buffer.commands(), impl_->options.command_timeout, shared,
                                     generation);
        },
        refused_replies);
}

detail::TransactionReplies Connection::Impl::transaction(const detail::CommandBuffer& buffer, bool asking,
                                                         std::uint64_t& generation) {
    static constexpr std::string_view kAsking = "*1\r\n$6\r\nASKING\r\n";
    const std::string_view parts[] = {kAsking, kMulti, buffer.data(), kExec};
    const std::span<const std::string_view> all(parts);
    const std::span<const std::string_view> sent = asking ? all : all.subspan(1);
    const std::size_t skip = asking ? 1 : 0;  // ASKING's +OK
    std::vector<Reply> got = round_trip(sent, buffer.commands() + 2 + skip, options.command_timeout,
                                        shareable(buffer.data(), buffer.commands()), generation);
    detail::TransactionReplies out;
    out.multi = std::move(got[skip]);
    for (std::size_t i = 0; i < buffer.commands(); ++i) {
        Reply& queued = got[skip + 1 + i];
        if (queued.is_error() && !out.rejected) out.rejected = std::move(queued);
    }
    out.exec = std::move(got.back());
    return out;
}

std::vector<Reply> Connection::transaction(const Pipeline& pipeline) const {
    const auto& buffer = detail::ConnectionAccess::buffer(pipeline);
    if (buffer.empty()) return {};
    using Replies = detail::TransactionReplies;
    auto* cluster = impl_->current_pool().cluster.get();
    Replies r =
        cluster
            ? cluster->transaction(buffer)
            : impl_->with_failover(
                  buffer.data(),
                  [&](std::uint64_t& generation) { return impl_->transaction(buffer, false, generation); },
                  [](const Replies& out) -> const Reply* {
                      if (detail::failover_reply(out.multi)) return &out.multi;
                      if (out.rejected && detail::failover_reply(*out.rejected)) return &*out.rejected;
                      return refused_reply(out.exec);
                  });
    r.multi.check();
    if (r.rejected) r.rejected->check();
    Reply& exec = r.exec;
    exec.check();
    if (exec.is_nil()) detail::throw_reply_error("transaction aborted: a watched key changed");
    return exec.as_array();
}

detail::SignalHub* detail::signal_hub(const Connection& conn) {
    return ConnectionAccess::impl(conn).current_pool().signals.get();
}

Connection& global_connection() {
    static Connection instance = [] {
        const char* url = std::getenv("REDIS_URL");
        return url && *url ? Connection(std::string_view(url)) : Connection();
    }();
    return instance;
}

}  // namespace retools
