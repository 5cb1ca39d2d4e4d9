#pragma once
// Whether a call may go to the server, apart from any I/O: after a refused
// dial or a timed-out round trip the server counts as down, and calls fail
// at once without sending anything until a backoff (100 ms, doubling up to
// ConnectionOptions::reconnect_backoff_max) has passed; then one call at a
// time goes through as a probe. Its success makes the server healthy again;
// its failure doubles the backoff. A dead or hung server is noticed once
// instead of costing every call a whole timeout. HealthGate (health.hpp)
// makes it thread-safe; this is only the decisions, so they can be checked
// without a server.

#include <algorithm>
#include <chrono>
#include <string>

namespace retools::detail {

class HealthFsm {
public:
    using Clock = std::chrono::steady_clock;

    /// The first backoff after the server went down.
    static constexpr std::chrono::milliseconds first_backoff{100};

    /// What to do with a call.
    struct Admission {
        enum class Kind {
            send,       // the server is healthy: go ahead
            probe,      // the server is down but due for a try: this call is the probe
            fail_fast,  // the server is down: throw without sending
        };
        Kind kind = Kind::send;
        /// fail_fast: how long until the next probe (0: a probe is under way).
        std::chrono::milliseconds retry_in{0};
    };

    /// `backoff_max` 0 turns failing fast off: every call is sent.
    /// `probe_limit`: a probe that has not reported after this long (its
    /// caller vanished) no longer holds the others back.
    explicit HealthFsm(std::chrono::milliseconds backoff_max, std::chrono::milliseconds probe_limit)
        : backoff_max_(backoff_max), probe_limit_(probe_limit) {}

    Admission admit(Clock::time_point now) {
        if (!down_) return {};
        if (now < retry_at_) return {Admission::Kind::fail_fast, until(now, retry_at_)};
        if (probing_ && now < probe_started_ + probe_limit_) return {Admission::Kind::fail_fast, {}};
        probing_ = true;
        probe_started_ = now;
        return {Admission::Kind::probe, {}};
    }

    /// The server answered (any call, the probe or one sent before it went down).
    void on_success() {
        down_ = probing_ = false;
        backoff_ = {};
        failure_.clear();
    }

    /// A dial was refused or a round trip timed out. `probe`: it was the
    /// probe's; a call sent before the server went down changes nothing more.
    void on_failure(Clock::time_point now, std::string what, bool probe) {
        if (backoff_max_.count() <= 0) return;
        if (down_ && !probe) return;
        if (!down_) {
            backoff_ = std::min(first_backoff, backoff_max_);
        } else {
            backoff_ = std::min(backoff_ * 2, backoff_max_);
        }
        down_ = true;
        probing_ = false;
        retry_at_ = now + backoff_;
        failure_ = std::move(what);
    }

    /// The probe ended without telling whether the server is up (another
    /// kind of failure, or it never reached the server): the next call probes.
    void on_probe_abandoned() { probing_ = false; }

    /// Forget the failure: the server was replaced (a Sentinel failover).
    void reset() { on_success(); }

    bool down() const noexcept { return down_; }
    /// The failure that took the server down (empty while healthy).
    const std::string& failure() const noexcept { return failure_; }
    std::chrono::milliseconds backoff() const noexcept { return backoff_; }

private:
    static std::chrono::milliseconds until(Clock::time_point now, Clock::time_point then) {
        return std::chrono::ceil<std::chrono::milliseconds>(then - now);
    }

    std::chrono::milliseconds backoff_max_;
    std::chrono::milliseconds probe_limit_;
    bool down_ = false;
    bool probing_ = false;
    std::chrono::milliseconds backoff_{0};
    Clock::time_point retry_at_{};
    Clock::time_point probe_started_{};
    std::string failure_;
};

}  // namespace retools::detail
