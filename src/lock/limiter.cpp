#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "util/random_token.hpp"
#include <retools/limiter.hpp>

#include "lock/backoff.hpp"
#include "lock/scripts.hpp"

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

LimiterSlot::LimiterSlot(Connection conn, std::string prefix, std::string key, std::string member) noexcept
    : conn_(std::move(conn)), prefix_(std::move(prefix)), key_(std::move(key)), member_(std::move(member)) {}

LimiterSlot::LimiterSlot(LimiterSlot&& other) noexcept
    : conn_(other.conn_),
      prefix_(std::move(other.prefix_)),
      key_(std::move(other.key_)),
      member_(std::move(other.member_)),
      held_(other.held_) {
    other.held_ = false;
}

LimiterSlot& LimiterSlot::operator=(LimiterSlot&& other) noexcept {
    if (this != &other) {
        try {
            release();
        } catch (...) {}
        conn_ = other.conn_;
        prefix_ = std::move(other.prefix_);
        key_ = std::move(other.key_);
        member_ = std::move(other.member_);
        held_ = other.held_;
        other.held_ = false;
    }
    return *this;
}

LimiterSlot::~LimiterSlot() {
    try {
        release();
    } catch (...) {
        // Documented: the slot expires after the limiter's expiration.
    }
}

void LimiterSlot::release() {
    if (!held_) return;
    held_ = false;
    conn_.command("ZREM", prefix_, member_);
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

std::string Limiter::slot_member(std::string_view key) {
    return fmt::format("{}:{}", key, detail::random_token());
}

void Limiter::release_limit(std::string_view key) {
    conn_.command("ZREM", options_.prefix, key);
}

std::optional<LimiterSlot> Limiter::acquire(std::string key, std::optional<milliseconds> expiration) {
    std::string member = slot_member(key);
    if (!acquire_limit(member, expiration)) return std::nullopt;
    return LimiterSlot{conn_, options_.prefix, std::move(key), std::move(member)};
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
            return LimiterSlot{conn_, options_.prefix, std::move(key), std::move(member)};
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        backoff.sleep_until_at_most(deadline);
    }
}

std::size_t Limiter::holders() const {
    return static_cast<std::size_t>(conn_.command("ZCARD", options_.prefix).as_integer());
}

}  // namespace retools
