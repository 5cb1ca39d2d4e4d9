#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/read_write_lock.hpp>

#include "lock/acquire_loop.hpp"
#include "lock/dogpile.hpp"  // lock_fence_ttl
#include "lock/scripts.hpp"
#include "lock/topology.hpp"
#include "lock/watchdog.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace {

using std::chrono::milliseconds;

void validate_rw(const std::string& key, const LockOptions& o) {
    detail::validate_lock_options("ReadWriteLock", key, o);
    if (o.min_replicas > 0)
        throw ConfigurationError(
            fmt::format("ReadWriteLock '{}': min_replicas is not supported (use a Lock)", key));
}

long this_pid() noexcept {
    return static_cast<long>(::getpid());
}

}  // namespace

ReadWriteLock::ReadWriteLock(std::string key, LockOptions options)
    : key_(std::move(key)),
      options_(std::move(options)),
      conn_(options_.connection ? *options_.connection : global_connection()) {
    validate_rw(key_, options_);
}

ReadWriteLock::ReadWriteLock(ReadWriteLock&& other) noexcept
    : key_(std::move(other.key_)),
      options_(other.options_),
      conn_(other.conn_),
      wait_conn_(std::move(other.wait_conn_)),
      mode_(other.mode_),
      token_(std::move(other.token_)),
      fence_(other.fence_),
      owner_pid_(other.owner_pid_),
      watchdog_(std::move(other.watchdog_)) {
    other.mode_ = Mode::none;
}

ReadWriteLock& ReadWriteLock::operator=(ReadWriteLock&& other) noexcept {
    if (this != &other) {
        unlock();
        key_ = std::move(other.key_);
        options_ = other.options_;
        conn_ = other.conn_;
        wait_conn_ = std::move(other.wait_conn_);
        mode_ = other.mode_;
        token_ = std::move(other.token_);
        fence_ = other.fence_;
        owner_pid_ = other.owner_pid_;
        watchdog_ = std::move(other.watchdog_);
        other.mode_ = Mode::none;
    }
    return *this;
}

ReadWriteLock::~ReadWriteLock() {
    unlock();
}

milliseconds ReadWriteLock::budget_ms(double ms) noexcept {
    return detail::budget_ms(ms);
}

void ReadWriteLock::lock() {
    acquire_or_throw(Mode::exclusive);
}

bool ReadWriteLock::try_lock() {
    return acquire_within(Mode::exclusive, milliseconds{0});
}

void ReadWriteLock::lock_shared() {
    acquire_or_throw(Mode::shared);
}

bool ReadWriteLock::try_lock_shared() {
    return acquire_within(Mode::shared, milliseconds{0});
}

void ReadWriteLock::acquire_or_throw(Mode mode) {
    const auto start = std::chrono::steady_clock::now();
    if (acquire_within(mode, options_.timeout)) return;
    const auto waited = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    throw LockTimeout(fmt::format("could not acquire read-write lock '{}' {} within {} ms (waited {} ms)",
                                  key_, mode == Mode::shared ? "for reading" : "for writing",
                                  options_.timeout.count(), waited.count()));
}

bool ReadWriteLock::acquire_within(Mode mode, milliseconds budget) {
    if (mode_ != Mode::none && owner_pid_ == this_pid())
        throw ConfigurationError(fmt::format("ReadWriteLock '{}': already held by this object", key_));
    forget();  // a hold inherited over fork() is the parent's, not ours
    const bool may_wait = budget > milliseconds{0};
    const detail::LockTopology topology(conn_);
    std::optional<detail::SignalHub::Subscription> subscription;  // made on the first wait
    return detail::acquire_loop(
        budget, options_.max_retry_delay,
        [&](milliseconds& retry_in) {
            return attempt(mode, retry_in, may_wait) ? detail::Attempt::taken : detail::Attempt::busy;
        },
        [&](milliseconds slice) {
            detail::wait_for_signal(wait_conn_, subscription, conn_, topology.sibling_key(key_, ":signal"),
                                    slice, detail::SignalWake::all);
        });
}

bool ReadWriteLock::attempt(Mode mode, milliseconds& retry_in, bool will_wait) {
    const detail::LockTopology topology(conn_);
    std::string token = detail::random_token();
    const milliseconds fence_ttl = detail::lock_fence_ttl(options_.expires);
    const milliseconds mark_ttl = will_wait ? options_.max_retry_delay + milliseconds{1000} : milliseconds{0};
    const Script& script =
        mode == Mode::shared ? detail::rw_acquire_read_script() : detail::rw_acquire_write_script();
    const std::string readers = topology.sibling_key(key_, ":readers");
    Reply reply = script(conn_,
                         {key_, readers, topology.sibling_key(key_, ":writer_waiting"),
                          topology.sibling_key(key_, ":fence"), topology.sibling_key(key_, ":waiting")},
                         token, options_.expires.count(), fence_ttl.count(), mark_ttl.count());
    if (reply[0].as_integer() != 1) {
        retry_in = milliseconds{std::max(reply[1].as_integer(), 0LL)};
        return false;
    }
    fence_ = static_cast<std::uint64_t>(reply[1].as_integer());
    token_ = std::move(token);
    mode_ = mode;
    owner_pid_ = this_pid();
    if (options_.auto_renew)
        watchdog_ = std::make_unique<detail::Watchdog>(
            conn_, mode == Mode::shared ? readers : key_, token_, options_.expires,
            mode == Mode::shared ? detail::rw_extend_read_script() : detail::lock_extend_script());
    return true;
}

void ReadWriteLock::unlock() noexcept {
    try {
        (void)release();
    } catch (...) {
        // Documented: the hold expires on its own after `expires`.
    }
}

void ReadWriteLock::unlock_shared() noexcept {
    unlock();
}

ReleaseResult ReadWriteLock::release() {
    if (mode_ == Mode::none) return ReleaseResult::not_held;
    if (owner_pid_ != this_pid()) {
        forget();
        return ReleaseResult::not_held;
    }
    const Mode mode = mode_;
    const std::string token = token_;
    forget();  // stop renewing before releasing
    const detail::LockTopology topology(conn_);
    const std::string signal = topology.sibling_key(key_, ":signal"),
                      waiting = topology.sibling_key(key_, ":waiting");
    const Reply reply = mode == Mode::shared
                            ? detail::rw_release_read_script()(
                                  conn_, {topology.sibling_key(key_, ":readers"), signal, waiting}, token,
                                  detail::lock_signal_ttl.count())
                            : detail::lock_release_script()(conn_, {key_, signal, waiting}, token,
                                                            detail::lock_signal_ttl.count());
    return reply.as_integer() == 1 ? ReleaseResult::released : ReleaseResult::lost;
}

void ReadWriteLock::extend(milliseconds ttl) {
    if (ttl < milliseconds{1})
        throw ConfigurationError(fmt::format(
            "ReadWriteLock '{}': extend() needs a TTL of at least 1 ms, got {} ms", key_, ttl.count()));
    if (mode_ == Mode::none || owner_pid_ != this_pid()) {
        forget();
        throw LockLost(fmt::format("ReadWriteLock '{}': extend() on a lock this object does not hold", key_));
    }
    const detail::LockTopology topology(conn_);
    const bool renewed =
        mode_ == Mode::shared
            ? detail::rw_extend_read_script()(conn_, {topology.sibling_key(key_, ":readers")}, token_,
                                              ttl.count())
                      .as_integer() == 1
            : detail::lock_extend_script()(conn_, {key_}, token_, ttl.count()).as_integer() == 1;
    if (renewed) return;
    forget();
    throw LockLost(fmt::format("ReadWriteLock '{}' was lost: its hold expired before extend()", key_));
}

bool ReadWriteLock::renewal_failed() const noexcept {
    return watchdog_ && watchdog_->lost();
}

void ReadWriteLock::forget() noexcept {
    detail::stop_renewal(watchdog_);
    token_.clear();
    mode_ = Mode::none;
}

}  // namespace retools
