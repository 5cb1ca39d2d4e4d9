#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include <fmt/format.h>

#include <retools/lock.hpp>

#include "client/cluster.hpp"
#include "client/errors.hpp"
#include "lock/acquire_loop.hpp"
#include "lock/dogpile.hpp"
#include "lock/scripts.hpp"
#include "lock/topology.hpp"
#include "lock/watchdog.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::string sibling_key(const Connection& conn, const std::string& key, std::string_view suffix) {
    return detail::LockTopology(conn).sibling_key(key, suffix);
}

void validate(const std::string& key, const LockOptions& o) {
    detail::validate_lock_options("Lock", key, o);
    if (o.min_replicas > 0 && o.replica_timeout < milliseconds{1})
        throw ConfigurationError(fmt::format("Lock '{}': replica_timeout must be at least 1 ms, got {} ms",
                                             key, o.replica_timeout.count()));
}

// WAIT holds the round trip up to replica_timeout: it must end before the connection gives up.
void validate_replica_wait(const std::string& key, const LockOptions& o, const Connection& conn) {
    const auto limit = conn.options().command_timeout;
    if (o.min_replicas > 0 && limit.count() > 0 && o.replica_timeout >= limit)
        throw ConfigurationError(fmt::format(
            "Lock '{}': replica_timeout ({} ms) must be less than the connection's command_timeout "
            "({} ms)",
            key, o.replica_timeout.count(), limit.count()));
}

Connection resolve(const LockOptions& o) {
    return o.connection ? *o.connection : global_connection();
}

long current_pid() noexcept {
    return static_cast<long>(::getpid());
}

}  // namespace

Lock::Lock(std::string key, LockOptions options) : Lock(std::move(key), std::move(options), std::defer_lock) {
    lock();
}

Lock::Lock(std::string key, std::defer_lock_t) : Lock(std::move(key), LockOptions{}, std::defer_lock) {}

Lock::Lock(std::string key, LockOptions options, std::defer_lock_t)
    : key_(std::move(key)), options_(std::move(options)), conn_(resolve(options_)) {
    validate(key_, options_);
    validate_replica_wait(key_, options_, conn_);
}

Lock::Lock(Lock&& other) noexcept
    : key_(std::move(other.key_)),
      options_(other.options_),
      conn_(other.conn_),
      wait_conn_(std::move(other.wait_conn_)),
      token_(std::move(other.token_)),
      fence_(other.fence_),
      owner_pid_(other.owner_pid_),
      watchdog_(std::move(other.watchdog_)) {
    other.token_.clear();
}

Lock& Lock::operator=(Lock&& other) noexcept {
    if (this != &other) {
        unlock();
        key_ = std::move(other.key_);
        options_ = other.options_;
        conn_ = other.conn_;
        wait_conn_ = std::move(other.wait_conn_);
        token_ = std::move(other.token_);
        other.token_.clear();
        fence_ = other.fence_;
        owner_pid_ = other.owner_pid_;
        watchdog_ = std::move(other.watchdog_);
    }
    return *this;
}

Lock::~Lock() {
    unlock();
}

std::chrono::milliseconds Lock::to_budget_ms(double ms) noexcept {
    return detail::budget_ms(ms);
}

void Lock::lock() {
    auto start = steady_clock::now();
    if (acquire_within(options_.timeout)) return;
    if (!unreplicated_.empty()) throw LockTimeout(unreplicated_);
    auto waited = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
    throw LockTimeout(fmt::format("could not acquire lock '{}' within {} ms (waited {} ms)", key_,
                                  options_.timeout.count(), waited.count()));
}

bool Lock::try_lock() {
    return acquire_within(milliseconds{0});
}

bool Lock::acquire_within(milliseconds budget) {
    if (held() && owner_pid_ == current_pid())
        throw ConfigurationError(fmt::format("Lock '{}': already held by this Lock object", key_));
    forget();  // a lock inherited over fork() is the parent's, not ours
    // Whether this caller may wait at all (then it marks `<key>:waiting`).
    const bool may_wait = budget > milliseconds{0};
    unreplicated_.clear();
    std::optional<detail::SignalHub::Subscription> subscription;  // made on the first wait
    return detail::acquire_loop(
        to_budget_ms(static_cast<double>(budget.count())), options_.max_retry_delay,
        [&](milliseconds& retry_in) {
            if (attempt(retry_in, may_wait)) return detail::Attempt::taken;
            return unreplicated_.empty() ? detail::Attempt::busy : detail::Attempt::refused;
        },
        [&](milliseconds slice) {
            detail::wait_for_signal(wait_conn_, subscription, conn_, sibling_key(conn_, key_, ":signal"), slice,
                                    detail::SignalWake::one);
        });
}

bool Lock::attempt(milliseconds& retry_in, bool will_wait) {
    std::string token = detail::random_token();
    long long acknowledged = 0;
    const Reply reply = run_acquire(token, will_wait, acknowledged);
    if (reply[0].as_integer() == 1 && acknowledged < static_cast<long long>(options_.min_replicas)) {
        undo_unreplicated(token, acknowledged);
        return false;
    }
    if (reply[0].as_integer() != 1) {
        // The key's PTTL: 0 means it expires within the millisecond (retry
        // then, not after a backoff of up to max_retry_delay); -1/-2 give no hint.
        const long long pttl = reply[1].as_integer();
        retry_in = milliseconds{pttl == 0 ? 1 : std::max(pttl, 0LL)};
        return false;
    }
    fence_ = static_cast<std::uint64_t>(reply[1].as_integer());
    token_ = std::move(token);
    owner_pid_ = current_pid();
    if (options_.auto_renew)
        watchdog_ = std::make_unique<detail::Watchdog>(conn_, key_, token_, options_.expires,
                                                       detail::lock_extend_script());
    return true;
}

Reply Lock::run_acquire(const std::string& token, bool will_wait, long long& acknowledged) {
    const milliseconds fence_ttl = detail::lock_fence_ttl(options_.expires);
    // Outlives the longest gap between two attempts of this waiter.
    const milliseconds mark_ttl = will_wait ? options_.max_retry_delay + milliseconds{1000} : milliseconds{0};
    const std::string fence = sibling_key(conn_, key_, ":fence"),
                      waiting = sibling_key(conn_, key_, ":waiting");
    const Script& script = detail::lock_acquire_script();
    if (options_.min_replicas == 0)
        return script(conn_, {key_, fence, waiting}, token, options_.expires.count(), fence_ttl.count(),
                      mark_ttl.count());
    // WAIT counts the replicas that have this connection's writes: it must
    // follow the script on the same connection, so both go in one pipeline
    // (on a Cluster the keyless WAIT goes with the command before it).
    for (const bool with_source : {false, true}) {
        Pipeline p;
        p.command(with_source ? "EVAL" : "EVALSHA", with_source ? script.source() : script.sha(), 3, key_,
                  fence, waiting, token, options_.expires.count(), fence_ttl.count(), mark_ttl.count());
        p.command("WAIT", options_.min_replicas, options_.replica_timeout.count());
        std::vector<Reply> replies = conn_.execute(p);
        if (!with_source && replies[0].is_error() && replies[0].error_message().starts_with("NOSCRIPT"))
            continue;
        detail::check_replies(replies, p);
        acknowledged = replies[1].as_integer();
        return replies[0];
    }
    return {};  // not reached: the second round sends the source
}

void Lock::undo_unreplicated(const std::string& token, long long acknowledged) {
    unreplicated_ = fmt::format(
        "could not acquire lock '{}': it was taken, but only {} of the {} replicas required acknowledged it "
        "within {} ms, so it was released again",
        key_, acknowledged, options_.min_replicas, options_.replica_timeout.count());
    (void)detail::lock_release_script()(
        conn_, {key_, sibling_key(conn_, key_, ":signal"), sibling_key(conn_, key_, ":waiting")}, token,
        detail::lock_signal_ttl.count());
}

void Lock::forget() noexcept {
    detail::stop_renewal(watchdog_);  // stops the renewals (a forked child leaks the parent's)
    token_.clear();
}

void Lock::unlock() noexcept {
    try {
        (void)release();
    } catch (...) {
        // Documented: the key expires on its own after `expires`.
    }
}

ReleaseResult Lock::release() {
    if (!held()) return ReleaseResult::not_held;
    if (owner_pid_ != current_pid()) {
        forget();
        return ReleaseResult::not_held;
    }
    std::string token = token_;
    forget();  // stop renewing before deleting, so no renewal follows the release
    Reply reply = detail::lock_release_script()(
        conn_, {key_, sibling_key(conn_, key_, ":signal"), sibling_key(conn_, key_, ":waiting")}, token,
        detail::lock_signal_ttl.count());
    return reply.as_integer() == 1 ? ReleaseResult::released : ReleaseResult::lost;
}

void Lock::extend(milliseconds ttl) {
    if (ttl < milliseconds{1})
        throw ConfigurationError(
            fmt::format("Lock '{}': extend() needs a TTL of at least 1 ms, got {} ms", key_, ttl.count()));
    if (!held() || owner_pid_ != current_pid()) {
        forget();
        throw LockLost(fmt::format("Lock '{}': extend() on a lock this object does not hold", key_));
    }
    if (detail::lock_extend_script()(conn_, {key_}, token_, ttl.count()).as_integer() == 1) return;
    forget();
    throw LockLost(fmt::format(
        "Lock '{}' was lost: its key expired before extend() (another owner may hold it now)", key_));
}

bool Lock::owns_lock() const {
    if (!held() || owner_pid_ != current_pid()) return false;
    auto value = conn_.command("GET", key_).as_optional_string();
    return value && *value == token_;
}

bool Lock::renewal_failed() const noexcept {
    return watchdog_ && watchdog_->lost();
}

}  // namespace retools
