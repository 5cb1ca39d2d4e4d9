#pragma once
// The cache-load protocol of one key as a state machine without I/O: what a
// single call and every key of a get_many go through (src/cache/load.cpp
// does the round trips). Inputs: the value read, whether it decodes, the
// dogpile lock taken or busy, the time; outputs: the next step.

#include <cmath>
#include <string_view>

#include <retools/detail/cache_load.hpp>

namespace retools::detail {

/// The fields of a value hash that a load looks at.
struct StoredValue {
    bool present = false;    // the hash exists (the original's `if result`)
    bool has_value = false;  // it has a `value` field
    double created = 0;      // missing or unreadable `created` counts as very old
    double delta = 0;        // seconds the last computation took (early refresh); 0 when unknown
    std::string_view value;
};

/// What the driver does next for a key.
enum class LoadStep {
    serve,    ///< return the value accepted last (LoadOutcome::stored)
    none,     ///< return nothing (LoadOutcome::none)
    try_lock, ///< one attempt at the dogpile lock, then read the value again (same round trip)
    wait,     ///< wait up to first_value_wait for the lock, then read the value again
    produce,  ///< call the function under the lock, store its value, release the lock
    timeout,  ///< LoadOutcome::lock_timeout
};

/// One key's load. Feed it the results of the step it asked for.
class KeyLoad {
public:
    /// `expires` in seconds; `beta` the region's early_refresh_beta.
    KeyLoad(Regenerate mode, double expires, double beta) noexcept
        : mode_(mode), expires_(expires), beta_(beta) {}

    /// The value read first (from Redis or the near cache). `decodes`: it has
    /// a value and the caller's type accepted it. `u`: uniform in (0, 1], the
    /// draw for an early refresh (unused unless the region has one).
    LoadStep read(const StoredValue& v, bool decodes, double now, double u) noexcept {
        if (decodes && (mode_ != Regenerate::when_stale || fresh(v, now))) {
            refresh_early_ = mode_ == Regenerate::when_stale && wants_early_refresh(v, now, u);
            return LoadStep::serve;
        }
        if (!decodes && mode_ == Regenerate::never) return LoadStep::none;
        have_stale_ = decodes;  // a stale value to serve while someone else regenerates
        return LoadStep::try_lock;
    }

    /// The attempt at the lock, and the value read right after it. With the
    /// lock, a value someone stored meanwhile is served: a fresh one, or any
    /// when we had none (the original's "did someone else create it?").
    LoadStep locked(bool taken, const StoredValue& again, bool decodes, double now) noexcept {
        if (!taken) return have_stale_ ? LoadStep::serve : LoadStep::wait;
        return decodes && (!have_stale_ || fresh(again, now)) ? LoadStep::serve : LoadStep::produce;
    }

    /// The wait for the lock (only when nothing was stored), and the value
    /// read after it: the result of the caller we waited for.
    LoadStep waited(bool taken, bool decodes) const noexcept {
        if (!taken) return LoadStep::timeout;
        return decodes ? LoadStep::serve : LoadStep::produce;
    }

    /// After a served value: whether to queue an early refresh of it.
    bool refresh_early() const noexcept { return refresh_early_; }
    /// Whether the value accepted by read() is a stale one.
    bool have_stale() const noexcept { return have_stale_; }

    bool fresh(const StoredValue& v, double now) const noexcept {
        return v.present && now - v.created < expires_;
    }

    /// XFetch: recompute a fresh value early with a probability that grows as
    /// its expiry nears, scaled by how long it takes to compute (delta) and beta.
    bool wants_early_refresh(const StoredValue& v, double now, double u) const noexcept {
        if (!(beta_ > 0) || !(v.delta > 0)) return false;
        return now - v.delta * beta_ * std::log(u) >= v.created + expires_;
    }

private:
    Regenerate mode_;
    double expires_;
    double beta_;
    bool have_stale_ = false;
    bool refresh_early_ = false;
};

/// Soft timeout (CacheRegionOptions::soft_timeout): whether a key to produce
/// is computed in the background while its caller waits at most the soft
/// timeout. Only with a stale value to fall back on, and only where stale
/// values are regenerated; `soft_timeout` in seconds, 0 = off.
constexpr bool soft_timeout_applies(double soft_timeout, Regenerate mode, bool have_stale) noexcept {
    return soft_timeout > 0 && mode == Regenerate::when_stale && have_stale;
}

/// What a caller whose key went to the background serves once it stops waiting.
enum class SoftStep {
    serve_stale,  ///< the stale value it read
    serve_new,    ///< the value the background computation stored
    rethrow,      ///< the function's exception
};

/// `done`: the computation ended within the soft timeout (stored, when it
/// could be); `failed`: the function threw; `fail_safe`: fail-safe serves the
/// stale value instead of that exception; `new_value`: the new value was
/// stored and decodes for the caller. A computation still running leaves the
/// caller with the stale value; one that threw, with the exception, as
/// without a soft timeout; a value that cannot be stored, with the stale one.
constexpr SoftStep after_soft_wait(bool done, bool failed, bool fail_safe, bool new_value) noexcept {
    if (!done) return SoftStep::serve_stale;
    if (failed) return fail_safe ? SoftStep::serve_stale : SoftStep::rethrow;
    return new_value ? SoftStep::serve_new : SoftStep::serve_stale;
}

}  // namespace retools::detail
