#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include <retools/limiter.hpp>

#include "lock/backoff.hpp"
#include "lock/scripts.hpp"
#include "lock/watchdog.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace {

using std::chrono::milliseconds;

void validate(const LimiterOptions& o) {
    if (o.limit == 0) throw ConfigurationError("Limiter: limit must be at least 1, got 0");
    if (o.prefix.empty())
        throw ConfigurationError("Limiter: prefix (the sorted set's name) must not be empty");
    if (o.expiration < milliseconds{1})
        throw ConfigurationError(fmt::format("Limiter '{}': expiration must be at least 1 ms, got {} ms",
                                             o.prefix, o.expiration.count()));
}

Connection resolve(const LimiterOptions& o) {
    return o.connection ? *o.connection : global_connection();
}

}  // namespace

// ---- LimiterSlot ----

LimiterSlot::LimiterSlot(Connection conn, std::string prefix, std::string key, std::string member,
                         std::optional<milliseconds> renew_every_third_of)
    : conn_(std::move(conn)), prefix_(std::move(prefix)), key_(std::move(key)), member_(std::move(member)) {
    if (renew_every_third_of)
        watchdog_ = std::make_unique<detail::Watchdog>(conn_, prefix_, member_, *renew_every_third_of,
                                                       detail::limiter_extend_script());
}

LimiterSlot::LimiterSlot(LimiterSlot&& other) noexcept
    : conn_(other.conn_),
      prefix_(std::move(other.prefix_)),
      key_(std::move(other.key_)),
      member_(std::move(other.member_)),
      held_(other.held_),
      watchdog_(std::move(other.watchdog_)) {
    other.held_ = false;
}

LimiterSlot& LimiterSlot::operator=(LimiterSlot&& other) noexcept {
    if (this != &other) {
        try {
            (void)release();
        } catch (...) {}
        conn_ = other.conn_;
        prefix_ = std::move(other.prefix_);
        key_ = std::move(other.key_);
        member_ = std::move(other.member_);
        held_ = other.held_;
        watchdog_ = std::move(other.watchdog_);
        other.held_ = false;
    }
    return *this;
}

LimiterSlot::~LimiterSlot() {
    try {
        (void)release();
    } catch (...) {
        // Documented: the slot expires after the limiter's expiration.
    }
    stop_renewal();
}

void LimiterSlot::stop_renewal() noexcept {
    detail::stop_renewal(watchdog_);
}

ReleaseResult LimiterSlot::release() {
    if (!held_) return ReleaseResult::not_held;
    held_ = false;
    stop_renewal();
    const Reply r = detail::limiter_release_script()(conn_, {prefix_}, member_);
    return r.as_integer() == 1 ? ReleaseResult::released : ReleaseResult::lost;
}

bool LimiterSlot::extend(milliseconds ttl) {
    if (ttl < milliseconds{1})
        throw ConfigurationError(fmt::format(
            "LimiterSlot {}: extend() needs a ttl of at least 1 ms, got {} ms", member_, ttl.count()));
    if (!held_) return false;
    return detail::limiter_extend_script()(conn_, {prefix_}, member_, ttl.count()).as_integer() == 1;
}

bool LimiterSlot::renewal_failed() const noexcept {
    return watchdog_ && watchdog_->lost();
}

// ---- Limiter ----

Limiter::Limiter(LimiterOptions options) : options_(std::move(options)), conn_(resolve(options_)) {
    validate(options_);
}

bool Limiter::acquire_limit(std::string_view key, std::optional<milliseconds> expiration, bool retry) {
    milliseconds ttl = expiration.value_or(options_.expiration);
    if (ttl < milliseconds{1})
        throw ConfigurationError(
            fmt::format("Limiter '{}': expiration of '{}' must be at least 1 ms, got {} ms", options_.prefix,
                        key, ttl.count()));
    auto reply = detail::limiter_acquire_script()(conn_, {options_.prefix}, key, options_.limit, ttl.count(),
                                                  retry ? "1" : "0");
    return reply.as_integer() == 1;
}

std::optional<milliseconds> Limiter::renewal(std::optional<milliseconds> expiration) const {
    if (!options_.auto_renew) return std::nullopt;
    return expiration.value_or(options_.expiration);
}

std::string Limiter::slot_member(std::string_view key) {
    return fmt::format("{}:{}", key, detail::random_token());
}

void Limiter::release_limit(std::string_view key) {
    conn_.command("ZREM", options_.prefix, key);
}

std::optional<LimiterSlot> Limiter::acquire(std::string key, std::optional<milliseconds> expiration) {
    std::string member = slot_member(key);
    if (!acquire_limit(member, expiration)) return std::nullopt;
    return LimiterSlot{conn_, options_.prefix, std::move(key), std::move(member), renewal(expiration)};
}

std::optional<LimiterSlot> Limiter::acquire_for(std::string key, milliseconds timeout,
                                                std::optional<milliseconds> expiration) {
    // Clamped so that "forever" (milliseconds::max()) cannot overflow the deadline.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::clamp(timeout, milliseconds{0}, milliseconds{1'000'000'000'000});
    detail::Backoff backoff{std::chrono::milliseconds{5}, std::chrono::milliseconds{1000}};
    std::string member = slot_member(key);
    for (;;) {
        if (acquire_limit(member, expiration))
            return LimiterSlot{conn_, options_.prefix, std::move(key), std::move(member),
                               renewal(expiration)};
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        backoff.sleep_until_at_most(deadline);
    }
}

std::size_t Limiter::holders() const {
    return static_cast<std::size_t>(conn_.command("ZCARD", options_.prefix).as_integer());
}

}  // namespace retools
