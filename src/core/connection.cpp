#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

namespace retools {
namespace {

struct ContextDeleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
}

bool is_timeout(const redisContext* c, int saved_errno) {
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT) return true;
#endif
    return c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                      saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS);
}

// One place turns a broken hiredis context into an exception.
[[noreturn]] void throw_io_error(const redisContext* c, int saved_errno, std::string_view during,
                                 const ConnectionOptions& options) {
    std::string what = c ? std::string(c->errstr) : std::string("cannot allocate a connection");
    if (c && is_timeout(c, saved_errno))
        throw TimeoutError(fmt::format("Redis {} timed out while {} ({})", options.describe(), during, what));
    throw ConnectionError(fmt::format("Redis {} failed while {}: {}", options.describe(), during, what));
}

Reply read_reply(redisContext* c, const ConnectionOptions& options) {
    void* raw = nullptr;
    errno = 0;
    if (redisGetReply(c, &raw) != REDIS_OK) throw_io_error(c, errno, "reading a reply", options);
    return Reply::adopt(static_cast<redisReply*>(raw));
}

void append(redisContext* c, std::string_view resp, const ConnectionOptions& options) {
    if (redisAppendFormattedCommand(c, resp.data(), resp.size()) != REDIS_OK)
        throw_io_error(c, errno, "buffering a command", options);
}

// Sends a handshake command on a fresh context; a server error becomes `Failure`.
template <class Failure, class... Args>
void handshake(redisContext* c, const ConnectionOptions& options, std::string_view step,
               const Args&... args) {
    detail::CommandBuffer buffer;
    buffer.add(args...);
    append(c, buffer.data(), options);
    Reply reply = read_reply(c, options);
    if (reply.is_error())
        throw Failure(
            fmt::format("Redis {}: {} failed: {}", options.describe(), step, reply.error_message()));
}

ContextPtr open_context(const ConnectionOptions& options) {
    redisContext* raw = nullptr;
    errno = 0;
    if (!options.path.empty()) {
        raw = options.connect_timeout.count() > 0
                  ? redisConnectUnixWithTimeout(options.path.c_str(), to_timeval(options.connect_timeout))
                  : redisConnectUnix(options.path.c_str());
    } else {
        raw = options.connect_timeout.count() > 0
                  ? redisConnectWithTimeout(options.host.c_str(), options.port,
                                            to_timeval(options.connect_timeout))
                  : redisConnect(options.host.c_str(), options.port);
    }
    ContextPtr ctx(raw);
    if (!ctx || ctx->err) throw_io_error(ctx.get(), errno, "connecting", options);
    if (options.path.empty()) redisEnableKeepAlive(ctx.get());  // best effort: notices dead peers
    if (options.command_timeout.count() > 0 &&
        redisSetTimeout(ctx.get(), to_timeval(options.command_timeout)) != REDIS_OK)
        throw_io_error(ctx.get(), errno, "setting the command timeout", options);
    if (!options.password.empty()) {
        std::string who =
            options.user.empty() ? std::string("AUTH") : fmt::format("AUTH as user {:?}", options.user);
        if (options.user.empty())
            handshake<AuthenticationError>(ctx.get(), options, who, "AUTH", options.password);
        else
            handshake<AuthenticationError>(ctx.get(), options, who, "AUTH", options.user, options.password);
    }
    if (options.db != 0)
        handshake<ConfigurationError>(ctx.get(), options, fmt::format("SELECT {}", options.db), "SELECT",
                                      options.db);
    return ctx;
}

}  // namespace

// The pool of one process. After fork() the child gets a new Pool and leaves
// the parent's (its sockets and mutex) untouched.
struct Pool {
    explicit Pool(pid_t owner) : pid(owner) {}
    const pid_t pid;
    std::mutex mutex;
    std::condition_variable available;
    std::vector<ContextPtr> idle;
    std::size_t open = 0;
};

struct Connection::Shared {
    explicit Shared(ConnectionOptions o) : options(std::move(o)), pool(new Pool(getpid())) {}
    ~Shared() {
        Pool* p = pool.load();
        if (p->pid == getpid()) delete p;  // a forked child's copy of the parent's pool is left alone
    }
    Shared(const Shared&) = delete;
    Shared& operator=(const Shared&) = delete;

    Pool& current_pool() {
        Pool* p = pool.load(std::memory_order_acquire);
        pid_t me = getpid();
        if (p->pid == me) return *p;
        auto* fresh = new Pool(me);
        if (pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
        delete fresh;  // another thread of this child won
        return *p;
    }

    const ConnectionOptions options;
    std::atomic<Pool*> pool;
    std::atomic<std::uint64_t> round_trips{0};
};

namespace {

// Borrows one context from the pool for one round trip; a broken context is
// dropped on return instead of going back to the pool.
class Lease {
public:
    explicit Lease(Connection::Shared& shared) : shared_(shared), pool_(shared.current_pool()) {
        std::unique_lock lock(pool_.mutex);
        if (pool_.idle.empty() && pool_.open >= shared_.options.pool_size) {
            auto ready = [&] { return !pool_.idle.empty() || pool_.open < shared_.options.pool_size; };
            auto wait = shared_.options.command_timeout;
            if (wait.count() > 0) {
                if (!pool_.available.wait_for(lock, wait, ready))
                    throw TimeoutError(
                        fmt::format("Redis {}: all {} pooled connections stayed busy for {} ms",
                                    shared_.options.describe(), shared_.options.pool_size, wait.count()));
            } else {
                pool_.available.wait(lock, ready);
            }
        }
        if (!pool_.idle.empty()) {
            ctx_ = std::move(pool_.idle.back());
            pool_.idle.pop_back();
            return;
        }
        ++pool_.open;
        lock.unlock();
        try {
            ctx_ = open_context(shared_.options);
        } catch (...) {
            lock.lock();
            --pool_.open;
            pool_.available.notify_one();
            throw;
        }
    }
    ~Lease() {
        std::lock_guard lock(pool_.mutex);
        if (ctx_ && ctx_->err == 0 && healthy_) {
            pool_.idle.push_back(std::move(ctx_));
        } else {
            ctx_.reset();
            --pool_.open;
        }
        pool_.available.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    redisContext* get() const noexcept { return ctx_.get(); }
    // A reply stream that was cut mid-way cannot be reused.
    void poison() noexcept { healthy_ = false; }

private:
    Connection::Shared& shared_;
    Pool& pool_;
    ContextPtr ctx_;
    bool healthy_ = true;
};

// Runs `body` with a leased context; any exception discards that context.
template <class Body>
auto with_context(Connection::Shared& shared, Body&& body) {
    Lease lease(shared);
    shared.round_trips.fetch_add(1, std::memory_order_relaxed);
    try {
        return body(lease.get());
    } catch (...) {
        lease.poison();
        throw;
    }
}

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
    shared_ = std::make_shared<Shared>(std::move(options));
}

Connection::Connection(std::string_view url) : Connection(ConnectionOptions::from_url(url)) {}

const ConnectionOptions& Connection::options() const noexcept {
    return shared_->options;
}

std::uint64_t Connection::round_trips() const noexcept {
    return shared_->round_trips.load(std::memory_order_relaxed);
}

std::size_t Connection::open_connections() const noexcept {
    Pool& pool = shared_->current_pool();
    std::lock_guard lock(pool.mutex);
    return pool.open;
}

void Connection::reset() const {
    Pool& pool = shared_->current_pool();
    std::vector<ContextPtr> closing;
    {
        std::lock_guard lock(pool.mutex);
        closing.swap(pool.idle);
        pool.open -= closing.size();
    }
    pool.available.notify_all();
}

Reply Connection::execute_one(const detail::CommandBuffer& buffer, std::chrono::milliseconds block) const {
    const ConnectionOptions& options = shared_->options;
    return with_context(*shared_, [&](redisContext* c) {
        const bool extend = block.count() > 0 && options.command_timeout.count() > 0;
        if (extend) redisSetTimeout(c, to_timeval(options.command_timeout + block));
        append(c, buffer.data(), options);
        Reply reply = read_reply(c, options);
        if (extend) redisSetTimeout(c, to_timeval(options.command_timeout));
        return reply;
    });
}

std::vector<Reply> Connection::execute(const Pipeline& pipeline) const {
    const auto& buffer = pipeline.buffer();
    if (buffer.empty()) return {};
    const ConnectionOptions& options = shared_->options;
    return with_context(*shared_, [&](redisContext* c) {
        append(c, buffer.data(), options);
        std::vector<Reply> replies;
        replies.reserve(buffer.commands());
        for (std::size_t i = 0; i < buffer.commands(); ++i) replies.push_back(read_reply(c, options));
        return replies;
    });
}

std::vector<Reply> Connection::transaction(const Pipeline& pipeline) const {
    const auto& buffer = pipeline.buffer();
    if (buffer.empty()) return {};
    const ConnectionOptions& options = shared_->options;
    Reply exec = with_context(*shared_, [&](redisContext* c) {
        append(c, kMulti, options);
        append(c, buffer.data(), options);
        append(c, kExec, options);
        read_reply(c, options).check();  // +OK for MULTI
        std::optional<Reply> rejected;
        for (std::size_t i = 0; i < buffer.commands(); ++i) {
            Reply queued = read_reply(c, options);
            if (queued.is_error() && !rejected) rejected = queued;
        }
        Reply result = read_reply(c, options);
        if (rejected) rejected->check();
        return result;
    });
    exec.check();
    if (exec.is_nil()) throw ReplyError("transaction aborted: a watched key changed");
    return exec.as_array();
}

namespace detail {

namespace {

// The first `limit` arguments of command number `index` in a RESP buffer.
std::vector<std::string_view> leading_args(std::string_view resp, std::size_t index, std::size_t limit) {
    std::vector<std::string_view> args;
    auto number = [&](char marker) -> long long {
        if (resp.empty() || resp.front() != marker) return -1;
        auto end = resp.find("\r\n");
        if (end == std::string_view::npos) return -1;
        long long n = -1;
        std::from_chars(resp.data() + 1, resp.data() + end, n);
        resp.remove_prefix(end + 2);
        return n;
    };
    for (std::size_t command = 0; command <= index; ++command) {
        long long count = number('*');
        for (long long i = 0; i < count; ++i) {
            long long len = number('$');
            if (len < 0 || resp.size() < static_cast<std::size_t>(len) + 2) return args;
            if (command == index && args.size() < limit)
                args.push_back(resp.substr(0, static_cast<std::size_t>(len)));
            resp.remove_prefix(static_cast<std::size_t>(len) + 2);
        }
    }
    return args;
}

std::string_view shortened(std::string_view arg) {
    return arg.substr(0, 200);
}

}  // namespace

namespace {
bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::toupper(static_cast<unsigned char>(x)) ==
                      std::toupper(static_cast<unsigned char>(y));
           });
}
}  // namespace

void throw_command_error(const Reply& reply, const CommandBuffer& buffer, std::size_t index) {
    auto args = leading_args(buffer.data(), index, 8);
    std::string what;
    if (!args.empty() && (args[0] == "EVALSHA" || args[0] == "EVAL")) {
        // Name the keys the script was given, not its hash or source.
        long long keys = 0;
        if (args.size() > 2) std::from_chars(args[2].data(), args[2].data() + args[2].size(), keys);
        what = "script";
        for (long long k = 0; k < keys && 3 + static_cast<std::size_t>(k) < args.size(); ++k)
            what.append(k == 0 ? " on " : ", ").append(shortened(args[3 + static_cast<std::size_t>(k)]));
    } else if (!args.empty() && (iequals(args[0], "AUTH") || iequals(args[0], "HELLO"))) {
        what = std::string(args[0]);  // the next argument may be a password
    } else {
        for (std::size_t i = 0; i < args.size() && i < 2; ++i)
            what.append(i ? " " : "").append(shortened(args[i]));
    }
    throw ReplyError(fmt::format("{}: {}", what, reply.error_message()));
}

void check_replies(const std::vector<Reply>& replies, const Pipeline& pipeline) {
    for (std::size_t i = 0; i < replies.size(); ++i)
        if (replies[i].is_error()) throw_command_error(replies[i], pipeline.buffer(), i);
}

}  // namespace detail

Connection& global_connection() {
    static Connection instance = [] {
        const char* url = std::getenv("REDIS_URL");
        return url && *url ? Connection(std::string_view(url)) : Connection();
    }();
    return instance;
}

}  // namespace retools
