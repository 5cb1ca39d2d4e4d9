#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include <fmt/format.h>

#include <retools/detail/random_token.hpp>
#include <retools/lock.hpp>
#include <retools/script.hpp>

#include "lock/backoff.hpp"

namespace retools {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// SETNX + EXPIRE of Python retools in one command: the key is never left
// without a TTL. KEYS[1] = lock key, ARGV[1] = token, ARGV[2] = TTL in ms.
const Script& acquire_script() {
    static const Script script{
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end\n"
        "return 0\n"};
    return script;
}

// Compare-and-delete: a holder whose key expired never deletes a successor's lock.
const Script& release_script() {
    static const Script script{
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
        "return 0\n"};
    return script;
}

// Compare-and-renew, for extend() and the watchdog. ARGV[2] = new TTL in ms.
const Script& extend_script() {
    static const Script script{
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "end\n"
        "return 0\n"};
    return script;
}

constexpr std::chrono::microseconds first_retry_delay{5000};  // as in Python retools

void validate(const std::string& key, const LockOptions& o) {
    if (key.empty()) throw ConfigurationError("Lock: the key must not be empty");
    if (o.expires < milliseconds{1})
        throw ConfigurationError(
            fmt::format("Lock '{}': expires must be at least 1 ms, got {} ms", key, o.expires.count()));
    if (o.timeout < milliseconds{0})
        throw ConfigurationError(
            fmt::format("Lock '{}': timeout must not be negative, got {} ms", key, o.timeout.count()));
    if (o.max_retry_delay < milliseconds{1})
        throw ConfigurationError(fmt::format("Lock '{}': max_retry_delay must be at least 1 ms, got {} ms",
                                             key, o.max_retry_delay.count()));
}

Connection resolve(const LockOptions& o) {
    return o.connection ? *o.connection : global_connection();
}

long current_pid() noexcept {
    return static_cast<long>(::getpid());
}

}  // namespace

// Renews the TTL every expires/3 from its own thread, with its own copies of
// everything it needs, so the Lock object may move while it runs.
struct Lock::Watchdog {
    Watchdog(Connection conn, std::string key, std::string token, milliseconds ttl)
        : conn_(std::move(conn)),
          key_(std::move(key)),
          token_(std::move(token)),
          ttl_(ttl),
          pid_(current_pid()) {
        thread_ = std::thread([this] { run(); });
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() { stop(); }

    // Whether this process is the one that started the thread (false in a forked child).
    bool in_owner_process() const noexcept { return current_pid() == pid_; }

    // Only in the owner process: in a forked child the thread does not exist
    // and the mutex and condition variable are copies in an arbitrary state
    // (destroying a condition variable a parent thread waits on blocks forever).
    void stop() noexcept {
        if (!thread_.joinable()) return;
        {
            std::lock_guard guard(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

    bool lost() const noexcept { return lost_.load(std::memory_order_acquire); }

private:
    void run() {
        const milliseconds interval = std::max(ttl_ / 3, milliseconds{1});
        std::unique_lock guard(mutex_);
        while (!wake_.wait_for(guard, interval, [this] { return stopping_; })) {
            guard.unlock();
            bool ours = true;
            try {
                ours = extend_script()(conn_, {key_}, token_, ttl_.count()).as_integer() == 1;
            } catch (const std::exception&) {
                // Unreachable server: try again next tick; the key outlives two missed ticks.
            }
            guard.lock();
            if (!ours) {
                lost_.store(true, std::memory_order_release);
                return;
            }
        }
    }

    Connection conn_;
    std::string key_;
    std::string token_;
    milliseconds ttl_;
    long pid_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::atomic<bool> lost_{false};
    std::thread thread_;  // last: started once every other member exists
};

Lock::Lock(std::string key, LockOptions options) : Lock(std::move(key), std::move(options), std::defer_lock) {
    lock();
}

Lock::Lock(std::string key, std::defer_lock_t) : Lock(std::move(key), LockOptions{}, std::defer_lock) {}

Lock::Lock(std::string key, LockOptions options, std::defer_lock_t)
    : key_(std::move(key)), options_(std::move(options)), conn_(resolve(options_)) {
    validate(key_, options_);
}

Lock::Lock(Lock&& other) noexcept
    : key_(std::move(other.key_)),
      options_(other.options_),
      conn_(other.conn_),
      token_(std::move(other.token_)),
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
        token_ = std::move(other.token_);
        other.token_.clear();
        owner_pid_ = other.owner_pid_;
        watchdog_ = std::move(other.watchdog_);
    }
    return *this;
}

Lock::~Lock() {
    unlock();
}

std::chrono::milliseconds Lock::to_budget_ms(double ms) noexcept {
    if (!(ms > 0)) return milliseconds{0};  // negative, zero, NaN: one attempt
    constexpr double ceiling = 1e12;        // ~30 years: "forever", and now() + it fits steady_clock
    return milliseconds{static_cast<milliseconds::rep>(std::ceil(std::min(ms, ceiling)))};
}

void Lock::lock() {
    auto start = steady_clock::now();
    if (acquire_within(options_.timeout)) return;
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
    const auto deadline = steady_clock::now() + to_budget_ms(static_cast<double>(budget.count()));
    detail::Backoff backoff{first_retry_delay, options_.max_retry_delay};
    for (;;) {
        if (attempt()) return true;
        if (steady_clock::now() >= deadline) return false;
        backoff.sleep_until_at_most(deadline);
    }
}

bool Lock::attempt() {
    std::string token = detail::random_token();
    if (acquire_script()(conn_, {key_}, token, options_.expires.count()).as_integer() != 1) return false;
    token_ = std::move(token);
    owner_pid_ = current_pid();
    if (options_.auto_renew) watchdog_ = std::make_unique<Watchdog>(conn_, key_, token_, options_.expires);
    return true;
}

void Lock::forget() noexcept {
    if (watchdog_) {
        if (watchdog_->in_owner_process()) {
            watchdog_.reset();  // stops and joins the renewal thread
        } else {
            // Forked child: the parent's renewal thread is not ours to stop, and
            // its state must not be destroyed here (see Watchdog::stop); leaking
            // one small object per inherited lock is the safe choice.
            (void)watchdog_.release();
        }
    }
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
    return release_script()(conn_, {key_}, token).as_integer() == 1 ? ReleaseResult::released
                                                                    : ReleaseResult::lost;
}

void Lock::extend(milliseconds ttl) {
    if (ttl < milliseconds{1})
        throw ConfigurationError(
            fmt::format("Lock '{}': extend() needs a TTL of at least 1 ms, got {} ms", key_, ttl.count()));
    if (!held() || owner_pid_ != current_pid()) {
        forget();
        throw LockLost(fmt::format("Lock '{}': extend() on a lock this object does not hold", key_));
    }
    if (extend_script()(conn_, {key_}, token_, ttl.count()).as_integer() == 1) return;
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
