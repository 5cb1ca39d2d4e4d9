#include "lock/dogpile.hpp"

#include <algorithm>
#include <atomic>
#include <string>

#include <fmt/format.h>

#include <retools/script.hpp>

#include "client/cluster.hpp"
#include "client/errors.hpp"
#include "lock/scripts.hpp"
#include "lock/watchdog.hpp"
#include "util/random_token.hpp"

namespace retools::detail {
namespace {

// `<key>:fence` outlives the last acquisition by a day (or twice the lock's
// TTL, if longer); after that, tokens continue from the server's clock.
constexpr std::chrono::milliseconds min_fence_ttl{24 * 3600 * 1000};

bool is_noscript(const Reply& reply) {
    return reply.is_error() && reply.error_message().starts_with("NOSCRIPT");
}

std::atomic<long long> ttl_for_tests{0};  // ms; 0: the region's expires

}  // namespace

std::chrono::milliseconds dogpile_ttl(std::chrono::milliseconds expires) noexcept {
    if (const long long forced = ttl_for_tests.load(std::memory_order_relaxed); forced > 0)
        return std::chrono::milliseconds{forced};
    return std::max(expires, std::chrono::milliseconds{1});
}

void set_dogpile_ttl_for_tests(std::chrono::milliseconds ttl) noexcept {
    ttl_for_tests.store(ttl.count(), std::memory_order_relaxed);
}

LockOptions dogpile_lock_options(const Connection& conn, std::chrono::milliseconds expires,
                                 std::chrono::milliseconds timeout) {
    const std::chrono::milliseconds ttl = dogpile_ttl(expires);
    return LockOptions{.expires = ttl,
                       .timeout = timeout,
                       .connection = conn,
                       .max_retry_delay = dogpile_max_retry_delay,
                       .auto_renew = dogpile_renewed(expires)};
}

std::chrono::milliseconds lock_fence_ttl(std::chrono::milliseconds expires) noexcept {
    return std::max(min_fence_ttl, expires * 2);
}

DogpileLocks::DogpileLocks(const Connection& conn, std::chrono::milliseconds expires)
    : conn_(conn), topology_(conn), ttl_(dogpile_ttl(expires)), renewed_(dogpile_renewed(expires)) {}

DogpileLocks::~DogpileLocks() {
    if (keys_.empty()) return;
    try {
        Pipeline p;
        add_release(p);
        (void)conn_.execute(p);
    } catch (...) {
        // The keys expire on their own after `expires`.
    }
}

void DogpileLocks::add_try_lock(Pipeline& p, const std::vector<std::string>& keys) {
    pending_keys_ = keys;
    pending_tokens_.clear();
    for (std::size_t i = 0; i < keys.size(); ++i) pending_tokens_.push_back(random_token());
    const long long fence_ttl = lock_fence_ttl(ttl_).count();
    const Script& script = lock_acquire_many_script();
    if (topology_.script_per_key()) {
        // The keys are in many slots: a script call each (EVAL: the nodes may not know it).
        for (std::size_t i = 0; i < keys.size(); ++i)
            p.command("EVAL", script.source(), 3, keys[i], topology_.sibling_key(keys[i], ":fence"),
                      topology_.sibling_key(keys[i], ":waiting"), ttl_.count(), fence_ttl,
                      pending_tokens_[i]);
        return;
    }
    std::vector<std::string> script_keys;
    script_keys.reserve(keys.size() * 3);
    for (const std::string& k : keys) {
        script_keys.push_back(k);
        script_keys.push_back(k + ":fence");
        script_keys.push_back(k + ":waiting");
    }
    if (send_source_)
        p.command("EVAL", script.source(), script_keys.size(), script_keys, ttl_.count(), fence_ttl,
                  pending_tokens_);
    else
        p.command("EVALSHA", script.sha(), script_keys.size(), script_keys, ttl_.count(), fence_ttl,
                  pending_tokens_);
}

std::vector<bool> DogpileLocks::taken(const std::vector<Reply>& replies, std::size_t at, bool& source_needed) {
    const std::size_t n = pending_keys_.size();
    std::vector<bool> out(n, false);
    source_needed = !topology_.script_per_key() && is_noscript(replies.at(at));
    if (source_needed) return out;
    for (std::size_t i = 0; i < n; ++i) {
        const Reply& r = topology_.script_per_key() ? replies.at(at + i) : replies.at(at);
        if (r.is_error())
            throw ReplyError(fmt::format("dogpile lock {}: {}", pending_keys_[i], r.error_message()));
        if ((topology_.script_per_key() ? r[0] : r[i]).as_integer() == 0) continue;
        out[i] = true;
        std::unique_ptr<Watchdog> renewal;
        if (renewed_)
            renewal = std::make_unique<Watchdog>(conn_, pending_keys_[i], pending_tokens_[i], ttl_,
                                                 lock_extend_script());
        hold(std::move(pending_keys_[i]), std::move(pending_tokens_[i]), std::move(renewal));
    }
    pending_keys_.clear();
    pending_tokens_.clear();
    return out;
}

void DogpileLocks::adopt(Lock&& lock) {
    if (!lock.held()) return;
    hold(lock.key_, std::move(lock.token_), std::move(lock.watchdog_));
    lock.token_.clear();
}

bool DogpileLocks::holds(const std::string& key) const {
    return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

bool DogpileLocks::hand_over(const std::string& key, DogpileLocks& to) {
    auto at = std::find(keys_.begin(), keys_.end(), key);
    if (at == keys_.end()) return false;
    const auto i = static_cast<std::size_t>(at - keys_.begin());
    to.hold(std::move(keys_[i]), std::move(tokens_[i]), std::move(renewals_[i]));
    const auto offset = static_cast<std::ptrdiff_t>(i);
    keys_.erase(keys_.begin() + offset);
    tokens_.erase(tokens_.begin() + offset);
    renewals_.erase(renewals_.begin() + offset);
    return true;
}

void DogpileLocks::hold(std::string key, std::string token, std::unique_ptr<Watchdog> renewal) {
    keys_.push_back(std::move(key));
    tokens_.push_back(std::move(token));
    renewals_.push_back(std::move(renewal));
}

void DogpileLocks::forget_at(std::size_t i) noexcept {
    auto at = static_cast<std::ptrdiff_t>(i);
    // Stop renewing before deleting, so no renewal follows the release. A
    // forked child leaks the parent's renewal (see Lock::forget).
    if (renewals_[i] && !renewals_[i]->in_owner_process()) (void)renewals_[i].release();
    keys_.erase(keys_.begin() + at);
    tokens_.erase(tokens_.begin() + at);
    renewals_.erase(renewals_.begin() + at);
}

void DogpileLocks::add_release(Pipeline& p) {
    if (keys_.empty()) return;
    if (topology_.script_per_key()) {
        while (!keys_.empty()) add_release_at(p, keys_.size() - 1);
        return;
    }
    std::vector<std::string> script_keys;
    script_keys.reserve(keys_.size() * 3);
    for (const std::string& k : keys_) {
        script_keys.push_back(k);
        script_keys.push_back(k + ":signal");
        script_keys.push_back(k + ":waiting");
    }
    // EVAL: it may run in a transaction, where a NOSCRIPT could not be retried.
    p.command("EVAL", lock_release_many_script().source(), script_keys.size(), script_keys,
              lock_signal_ttl.count(), tokens_);
    while (!keys_.empty()) forget_at(keys_.size() - 1);
}

void DogpileLocks::add_release_of(Pipeline& p, const std::string& key) {
    auto at = std::find(keys_.begin(), keys_.end(), key);
    if (at != keys_.end()) add_release_at(p, static_cast<std::size_t>(at - keys_.begin()));
}

void DogpileLocks::add_release_at(Pipeline& p, std::size_t i) {
    const std::string& key = keys_[i];
    p.command("EVAL", lock_release_many_script().source(), 3, key, topology_.sibling_key(key, ":signal"),
              topology_.sibling_key(key, ":waiting"), lock_signal_ttl.count(), tokens_[i]);
    forget_at(i);
}

}  // namespace retools::detail
