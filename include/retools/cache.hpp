#pragma once
// Cache regions: cached callables with dogpile prevention and hit/miss
// statistics, stored exactly as Python retools stores them.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <retools/codec.hpp>
#include <retools/connection.hpp>
#include <retools/detail/cache_load.hpp>
#include <retools/detail/cache_value.hpp>
#include <retools/detail/callable_traits.hpp>
#include <retools/detail/python_str.hpp>
#include <retools/errors.hpp>

namespace retools {

/// The per-process near cache of a region (CacheRegionOptions::local): an LRU
/// of values in this process's memory in front of Redis, kept correct by
/// Redis' server-assisted client-side caching (see docs/cache.md, "Near
/// cache"). Off while both bounds are 0, the default. An aggregate.
///
/// ```cpp
/// retools::CacheRegion::add_region("hot", {.expires = 60s, .local = {.max_entries = 10000}});
/// ```
struct LocalCacheOptions {
    /// Most values kept; the least recently used go first. Default 0: no
    /// bound by count (then `max_bytes` bounds it).
    std::size_t max_entries = 0;
    /// Most bytes kept, counted as key length + stored value length + 64 per
    /// value. Default 0: no bound by size (then `max_entries` bounds it).
    std::size_t max_bytes = 0;
    /// Whether the near cache is on: some bound is set.
    constexpr bool enabled() const noexcept { return max_entries != 0 || max_bytes != 0; }
};

/// Settings of one cache region. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::CacheRegion::add_region("short_term", {.expires = 60s, .first_value_wait = 5s});
/// retools::CacheRegion::add_region("cpp_only", {.expires = 60s, .value_format =
/// retools::ValueFormat::native});
/// ```
/// What a cached call does when Redis cannot be reached or answers too late
/// (a ConnectionError, TimeoutError included).
enum class RedisErrorPolicy {
    /// Fail open (the default): call the function and return its result
    /// without the cache, throwing nothing. Concurrent callers of one key in
    /// this process share one computation meanwhile. Nothing is stored and
    /// no statistics are counted for such calls; each is counted in
    /// CacheRegion::bypassed_calls() and a warning goes to the log handler
    /// (at most once a second).
    call_through,
    /// Throw the ConnectionError, as retools did before 0.3.
    raise,
};

struct CacheRegionOptions {
    /// How long a stored value stays fresh; also the TTL of the regeneration
    /// lock, as in the original, which the caller computing a value renews
    /// every `expires / 3` for as long as its function runs (for `expires`
    /// from 30 ms up), so a function slower than `expires` is still computed
    /// once. 0 means never fresh: every call regenerates. Must not be negative.
    std::chrono::milliseconds expires{0};
    /// TTL of the value hash in Redis (the original's `redis_expiration`);
    /// default one week. Must be at least 1 s.
    std::chrono::seconds redis_expiration{7 * 24 * 3600};
    /// When no value is stored yet and another caller is computing it, how
    /// long to wait for it before giving up with `LockTimeout`; default 60 s.
    /// 0 means one attempt at the lock. Waiters retry at least every 100 ms.
    /// (A stale value is always served at once instead of waiting.)
    std::chrono::milliseconds first_value_wait{60000};
    /// Redis to use; nullopt (default) means `global_connection()` at call time.
    std::optional<Connection> connection{};
    /// How values are stored: ValueFormat::pickle (default), shared with
    /// Python retools; ValueFormat::native for the C++-only Codec<T> encoding.
    /// A stored value in the other format (or of another type) is a miss.
    ValueFormat value_format = ValueFormat::pickle;
    /// Probabilistic early refresh (XFetch; Vattani, Chierichetti and
    /// Lowenstein, PVLDB 2015): a fresh hit is recomputed ahead of its expiry
    /// when `now - delta * beta * ln(random) >= created + expires`, where
    /// `delta` is how long the last computation took (stored as an extra
    /// `delta` field of the value hash, float seconds; Python reads only
    /// `created` and `value`). The recomputation runs on a small shared
    /// background executor (2 threads, at most 64 queued; more are dropped)
    /// under the dogpile lock, so at most one runs per key across processes,
    /// and every caller, the one whose read triggered it included, gets the
    /// stored value at once. Default 0: off. 1 is the paper's choice; larger
    /// refreshes earlier. Needs a copyable function and copyable arguments
    /// (it runs later, on another thread); member functions are not refreshed
    /// early. Must not be negative.
    double early_refresh_beta = 0;
    /// A near cache in this process in front of Redis (see LocalCacheOptions):
    /// a fresh value read once is then served from memory with no round trip
    /// until anyone (Python included) writes its key, it is invalidated, its
    /// `expires` passes, or the tracking connection is lost (then every local
    /// copy is dropped). Hits served locally are counted in memory and added
    /// to the original's hit counters at least once a second. Default: off.
    /// Not for regions named `hits` or `misses` (their keys would match the
    /// statistics counters) nor over Sentinel connections (there it stays off).
    LocalCacheOptions local{};
    /// When Redis cannot be reached or answers too late: call the function
    /// without the cache (RedisErrorPolicy::call_through, the default) or
    /// throw (RedisErrorPolicy::raise). See docs/cache.md, "When Redis is down".
    RedisErrorPolicy on_redis_error = RedisErrorPolicy::call_through;
    /// Fail-safe: when the function throws while a stored value no older
    /// than this exists (its `created` that recent), the caller gets that
    /// stale value instead of the exception; the failure goes to the log
    /// handler and is counted in CacheRegion::fail_safe_served(). Callers of
    /// that key in this process are then served the stale value without
    /// calling the function for a second, so a failing backend is not
    /// hammered. 0 (the default): off, the exception propagates. Must not be
    /// negative.
    std::chrono::milliseconds fail_safe_max_age{0};
    /// Soft timeout: a caller that has a stale value to fall back on waits at
    /// most this long for the function, then gets the stale value; the
    /// computation goes on in the background, stores its result and releases
    /// the dogpile lock (renewed meanwhile), so the next callers get the new
    /// value. A caller with nothing stored still waits for the function. Needs
    /// what early refresh needs (a copyable function and copyable arguments,
    /// not a member function); other cached functions wait as without it.
    /// A computation still running when the process exits is abandoned (see
    /// docs/cache.md, "Soft timeout"). Default 0: off. Must not be negative.
    std::chrono::milliseconds soft_timeout{0};
    /// TTL of the daily hit and miss counters (`retools:hits:<day>:...`,
    /// `retools:misses:<day>:...`), set in the round trip that counts: each
    /// count moves it to this from now, so a counter lives this long after
    /// its last count. Default 90 days; 0 keeps them forever, as the original
    /// does (a counter created by a Python process has no TTL until a retools
    /// call of this region counts into it). Must not be negative.
    std::chrono::seconds stats_retention = std::chrono::days{90};
};

/// The five Redis key names of one cached call, built exactly as the original
/// builds them.
///
/// ```cpp
/// retools::CacheKey k{"home", "my_func", "1 2 3", "2004-02-02"};
/// // k.redis_hit_key == "retools:hits:2004-02-02:home:my_func:1 2 3"
/// ```
struct CacheKey {
    /// `today` is the local date `YYYY-MM-DD` of the statistics keys; empty means today.
    CacheKey(std::string_view region, std::string_view ns, std::string_view key, std::string_view today = {});

    std::string lock_key;        ///< `retools:lock:<region>:<ns>:<key>`
    std::string redis_key;       ///< `retools:<region>:<ns>:<key>` (hash: created, value)
    std::string redis_hit_key;   ///< `retools:hits:<today>:<region>:<ns>:<key>`
    std::string redis_miss_key;  ///< `retools:misses:<today>:<region>:<ns>:<key>`
    std::string redis_keyset;    ///< `retools:<region>:<ns>:keys`
};

/// The registry of cache regions and the low-level cache operations. Safe to
/// use from many threads; configure regions at start-up.
///
/// ```cpp
/// retools::CacheRegion::add_region("short_term", 60s);
/// retools::CacheRegion::statistics = false;   // no hit/miss counters from now on
/// ```
class CacheRegion {
public:
    /// `false` bypasses Redis entirely: cached callables just call their function.
    static inline std::atomic<bool> enabled{true};
    /// `false` stops writing hit/miss counters (unless a call overrides it).
    static inline std::atomic<bool> statistics{true};

    /// Adds (or replaces) a region, like the original's `add_region(name, expires, redis_expiration)`.
    /// Throws CacheConfigurationError for an empty name, a negative `expires` or a
    /// `redis_expiration` under 1 s.
    static void add_region(std::string name, std::chrono::milliseconds expires,
                           std::chrono::seconds redis_expiration = std::chrono::hours{24 * 7});
    /// Adds (or replaces) a region with every setting.
    static void add_region(std::string name, CacheRegionOptions options);
    /// Whether `name` was added.
    static bool has_region(std::string_view name);
    /// The settings of a region; nullopt when it was not added.
    static std::optional<CacheRegionOptions> region(std::string_view name);
    /// Names of every region added, sorted.
    static std::vector<std::string> region_names();

    /// The original's `load`: the stored string of (region, ns, key), regenerated
    /// with `callable` when stale or missing (one caller at a time; others get
    /// the stale value, or wait for the first value up to the region's
    /// `first_value_wait`). With `regenerate = false` (or no callable) a stored
    /// value is returned whatever its age. nullopt plays the original's
    /// `NoneMarker`: nothing stored and nothing generated (including when the
    /// wait for another caller's first value timed out). `statistics` nullopt
    /// means `CacheRegion::statistics`. Throws CacheConfigurationError for an
    /// unknown region; exceptions from `callable` propagate and nothing is stored.
    /// Strings travel in the region's value_format: a pickled str or bytes in a
    /// pickle region (what Python's load returns for a str), the bytes as they
    /// are in a native region; a stored value that is not a string in that
    /// format counts as missing.
    ///
    /// ```cpp
    /// std::optional<std::string> v = retools::CacheRegion::load(
    ///     "short_term", "myapp.report", "2024", true, [] { return build_report(); });
    /// ```
    static std::optional<std::string> load(std::string_view region, std::string_view ns, std::string_view key,
                                           bool regenerate = true,
                                           const std::function<std::string()>& callable = {},
                                           std::optional<bool> statistics = std::nullopt);

    /// Marks every value of the region stale (same as invalidate_region()).
    static void invalidate(std::string_view region);

    /// Cached calls this process answered without the cache because Redis
    /// could not be reached (RedisErrorPolicy::call_through), since it started.
    static std::uint64_t bypassed_calls() noexcept;
    /// Calls this process answered with a stale value because the function
    /// threw (CacheRegionOptions::fail_safe_max_age), since it started.
    static std::uint64_t fail_safe_served() noexcept;
};

/// Hit and miss counts.
struct CacheStats {
    std::int64_t hits = 0;    ///< `retools:hits:<day>:...` counter(s)
    std::int64_t misses = 0;  ///< `retools:misses:<day>:...` counter(s)
    /// hits + misses.
    std::int64_t calls() const noexcept { return hits + misses; }
    /// hits / calls, 0 when there were no calls.
    double hit_ratio() const noexcept {
        return calls() == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(calls());
    }
    /// Adds another count (for totals).
    CacheStats& operator+=(const CacheStats& other) noexcept {
        hits += other.hits;
        misses += other.misses;
        return *this;
    }
    friend bool operator==(const CacheStats&, const CacheStats&) = default;
};

/// Statistics of one namespace (one cached function) for a day.
struct NamespaceStats {
    CacheStats total;                        ///< sum over `keys`
    std::map<std::string, CacheStats> keys;  ///< per cached key (argument set)
};

/// Statistics of one region for a day.
struct RegionStats {
    CacheStats total;  ///< sum over `namespaces`
    std::map<std::string, NamespaceStats> namespaces;
};

/// Hits and misses of one cached call on `day` (`YYYY-MM-DD`, local date;
/// empty means today). One round trip. Reads the region's connection when the
/// region was added here, else `global_connection()`.
///
/// ```cpp
/// auto s = retools::cache_stats("short_term", "myapp.search", "bunny 10");
/// fmt::print("{} hits, {} misses\n", s.hits, s.misses);
/// ```
CacheStats cache_stats(std::string_view region, std::string_view ns, std::string_view key,
                       std::string_view day = {});
/// Per-key and total statistics of a namespace, over the keys ever stored in
/// it (`retools:<region>:<ns>:keys`). Two round trips.
NamespaceStats namespace_stats(std::string_view region, std::string_view ns, std::string_view day = {});
/// Per-namespace, per-key and total statistics of a region. Three round trips.
RegionStats region_stats(std::string_view region, std::string_view day = {});

/// Regions that ever stored a value in this Redis (`retools:regions`, written
/// by every service, C++ or Python), sorted. One round trip.
///
/// ```cpp
/// for (const auto& region : retools::stored_regions())
///     std::cout << region << ": " << retools::region_stats(region).total.hits << " hits\n";
/// ```
std::vector<std::string> stored_regions(const Connection& conn = global_connection());

/// Marks every value of a region stale without deleting anything: their
/// `created` goes back by the longest `expires` of all regions plus an hour,
/// and keys whose value hash is gone leave the namespace's key set. Works on
/// regions stored by other services too (it does not need add_region()).
///
/// ```cpp
/// retools::invalidate_region("short_term");
/// ```
void invalidate_region(std::string_view region);

/// Options of cache_region().
struct CacheOptions {
    /// The original's decorator arguments: when not empty, the namespace
    /// becomes `<namespace>.<args joined by " ">`. Empty (default): the
    /// namespace is used as given.
    std::vector<std::string> namespace_args;
    /// false: a stored value is served whatever its age; the function is called
    /// only when nothing (decodable) is stored. Default true: stale values are
    /// regenerated.
    bool regenerate = true;
    /// Hit/miss counters for this function: nullopt (default) follows
    /// `CacheRegion::statistics`; true or false overrides it.
    std::optional<bool> statistics;
    /// Most threads that compute the missing values of one get_many() at
    /// once, the calling thread included. Default 1: one after another on the
    /// calling thread, as single calls would. More (e.g. 4) suits a slow
    /// function that is safe to call from several threads at once; the extra
    /// threads live only while a get_many computes. Must be at least 1.
    std::size_t get_many_threads = 1;
};

/// The original's namespace of a Python function: `<module>.<function>.<deco args>`,
/// each decorator argument rendered with Python's `str()` and joined by one
/// space. Use it to share a Python function's cache.
///
/// ```cpp
/// // Python: @cache_region('short_term', 'load_things') on myapp.search.load
/// auto ns = retools::function_namespace("myapp.search", "load", "load_things");
/// // ns == "myapp.search.load.load_things"
/// ```
template <class... DecoArgs>
std::string function_namespace(std::string_view module, std::string_view function,
                               const DecoArgs&... deco_args) {
    std::string ns;
    ns.append(module).append(".").append(function).append(".");
    detail::append_python_joined(ns, deco_args...);
    return ns;
}

template <class F, class R, class SelfList, class ArgList>
class CachedFunction;

/// A callable whose results are cached in a region: call it like the wrapped
/// function. Returned by cache_region(); cheap to copy if the function is.
/// The cache key is the call's arguments rendered like Python's `str()` and
/// joined by spaces; for a member function the object is not part of the key.
template <class F, class R, class... Self, class... Args>
class CachedFunction<F, R, detail::type_list<Self...>, detail::type_list<Args...>> {
    static_assert(sizeof...(Self) <= 1);
    static_assert(!std::is_void_v<R>,
                  "retools::cache_region: a function returning void has nothing to cache");
    static_assert(detail::Cacheable<std::remove_cvref_t<R>>,
                  "retools::cache_region: no way to store this result type. Give it nlohmann "
                  "to_json/from_json, or specialize retools::Codec<T> with encode/decode.");

public:
    /// The wrapped function's result type, without reference or const.
    using result_type = std::remove_cvref_t<R>;

    CachedFunction(std::string region, std::string ns, F function, CacheOptions options)
        : region_(std::move(region)),
          namespace_(std::move(ns)),
          function_(std::move(function)),
          regenerate_(options.regenerate),
          statistics_(options.statistics),
          get_many_threads_(options.get_many_threads) {
        if (get_many_threads_ == 0)
            throw CacheConfigurationError("CacheOptions.get_many_threads must be at least 1");
        if (!options.namespace_args.empty()) {
            namespace_ += '.';
            for (std::size_t i = 0; i < options.namespace_args.size(); ++i) {
                if (i) namespace_ += ' ';
                namespace_ += options.namespace_args[i];
            }
        }
    }

    /// Returns the cached value for these arguments, calling the function when
    /// it is missing, stale or undecodable. Throws CacheConfigurationError when
    /// the region was not added, LockTimeout when no value exists and another
    /// caller computed it for longer than the region's `first_value_wait`, and
    /// whatever the function throws (then nothing is stored).
    result_type operator()(Self... self, Args... args) const {
        auto region = detail::find_region(region_);
        if (!CacheRegion::enabled.load(std::memory_order_relaxed))
            return std::invoke(function_, std::forward<Self>(self)..., std::forward<Args>(args)...);
        std::string key;
        detail::append_python_joined(key, args...);
        auto call = [&]() -> result_type {
            return std::invoke(function_, std::forward<Self>(self)..., std::forward<Args>(args)...);
        };
        Target<decltype(call)> target{call, detail::value_format(*region)};
        if constexpr (refreshable)
            target.refresh = [this, &args...] {
                return make_refresher(std::tuple<std::remove_cvref_t<Args>...>(args...));
            };
        auto tags_of = [this, &args...] { return tagger_(args...); };
        if (tagger_) target.tags_of = std::ref(tags_of);  // no allocation: a hit never calls it
        const bool stats = statistics_.value_or(CacheRegion::statistics.load(std::memory_order_relaxed));
        auto mode = regenerate_ ? detail::Regenerate::when_stale : detail::Regenerate::when_missing;
        if (detail::cache_load(*region, namespace_, key, mode, stats, target) ==
            detail::LoadOutcome::lock_timeout)
            detail::throw_first_value_timeout(region_, namespace_, key);
        return std::move(*target.value);
    }

    /// The cached values of many calls at once, in order: one round trip reads
    /// them all (statistics included; none for values in a near cache), the
    /// missing and stale ones take their dogpile locks in one more round trip,
    /// are computed (on this thread, in order, or on up to
    /// CacheOptions::get_many_threads threads) and stored, their locks
    /// released, in one last round trip. Redis is left exactly as the same
    /// single calls would leave it. Throws as operator() does (LockTimeout for
    /// the first key whose value another caller computed for too long; the
    /// first exception of the function, after every computation ended).
    ///
    /// ```cpp
    /// // auto results = search.get_many({{"bunny", 10}, {"kitten", 5}});
    /// ```
    std::vector<result_type> get_many(
        Self... self, const std::vector<std::tuple<std::remove_cvref_t<Args>...>>& calls) const {
        std::vector<result_type> out;
        out.reserve(calls.size());
        auto region = detail::find_region(region_);
        auto invoke = [&](const std::tuple<std::remove_cvref_t<Args>...>& c) -> result_type {
            return std::apply([&](const auto&... a) { return std::invoke(function_, self..., a...); }, c);
        };
        if (!CacheRegion::enabled.load(std::memory_order_relaxed)) {
            for (const auto& c : calls) out.push_back(invoke(c));
            return out;
        }
        std::vector<std::string> keys;
        keys.reserve(calls.size());
        for (const auto& c : calls)
            keys.push_back(std::apply([](const auto&... a) { return detail::python_joined(a...); }, c));
        using Call = std::function<result_type()>;
        std::vector<Call> producers;
        std::vector<Target<Call>> targets;
        producers.reserve(calls.size());
        targets.reserve(calls.size());
        const ValueFormat format = detail::value_format(*region);
        for (const auto& c : calls) {
            producers.emplace_back([&invoke, &c] { return invoke(c); });
            targets.emplace_back(producers.back(), format);
            if constexpr (refreshable) targets.back().refresh = [this, &c] { return make_refresher(c); };
            if (tagger_) targets.back().tags_of = [this, &c] { return std::apply(tagger_, c); };
        }
        std::vector<detail::LoadTarget*> pointers;
        for (auto& t : targets) pointers.push_back(&t);
        const bool stats = statistics_.value_or(CacheRegion::statistics.load(std::memory_order_relaxed));
        auto mode = regenerate_ ? detail::Regenerate::when_stale : detail::Regenerate::when_missing;
        auto outcomes =
            detail::cache_load_many(*region, namespace_, keys, mode, stats, pointers, get_many_threads_);
        for (std::size_t i = 0; i < calls.size(); ++i) {
            if (outcomes[i] == detail::LoadOutcome::lock_timeout)
                detail::throw_first_value_timeout(region_, namespace_, keys[i]);
            out.push_back(std::move(*targets[i].value));
        }
        return out;
    }

    /// The cache key of a call with these arguments (`"bunny 10"`).
    std::string key(const std::remove_cvref_t<Args>&... args) const { return detail::python_joined(args...); }
    /// The region name.
    const std::string& region() const noexcept { return region_; }
    /// The namespace, including the namespace arguments.
    const std::string& namespace_name() const noexcept { return namespace_; }

    /// See invalidate_function().
    void invalidate(const std::remove_cvref_t<Args>&... args) const {
        detail::invalidate_key(region_, namespace_, key(args...));
    }
    /// See invalidate_function().
    void invalidate_all() const { detail::invalidate_namespace(region_, namespace_); }
    /// See evict_function().
    void evict(const std::remove_cvref_t<Args>&... args) const {
        detail::evict_key(region_, namespace_, key(args...));
    }
    /// See evict_function().
    void evict_all() const { detail::evict_namespace(region_, namespace_); }

    /// Statistics of this function on `day` (`YYYY-MM-DD`; empty means today).
    NamespaceStats stats(std::string_view day = {}) const {
        return namespace_stats(region_, namespace_, day);
    }

    /// The tags of a call's value: `tagger` is called with the call's
    /// arguments (not the object of a member function) whenever a value is
    /// stored, and returns its tags, e.g. `{"user:42"}`. invalidate_tag() then
    /// makes every value stored with that tag stale. A hit does not call it.
    /// Returns a copy of this cached function with the tagger (replacing any).
    ///
    /// ```cpp
    /// // auto profile = retools::cache_region("short_term", "myapp.profile", load_profile)
    /// //     .with_tags([](int user) { return std::vector<std::string>{"user:" + std::to_string(user)}; });
    /// ```
    template <class Tagger>
    CachedFunction with_tags(Tagger tagger) const& {
        CachedFunction copy(*this);
        copy.tagger_ = checked_tagger(std::move(tagger));
        return copy;
    }
    /// Same, moving this cached function into the result.
    template <class Tagger>
    CachedFunction with_tags(Tagger tagger) && {
        tagger_ = checked_tagger(std::move(tagger));
        return std::move(*this);
    }

private:
    using TagFunction = std::function<std::vector<std::string>(const std::remove_cvref_t<Args>&...)>;

    template <class Tagger>
    static TagFunction checked_tagger(Tagger tagger) {
        static_assert(std::is_invocable_v<const Tagger&, const std::remove_cvref_t<Args>&...>,
                      "retools: with_tags needs a callable taking the cached function's arguments");
        static_assert(
            std::is_convertible_v<std::invoke_result_t<const Tagger&, const std::remove_cvref_t<Args>&...>,
                                  std::vector<std::string>>,
            "retools: a tagger returns the tags as std::vector<std::string>");
        return TagFunction(std::move(tagger));
    }

    // Early refresh runs the function later on another thread: it needs its
    // own copies of the function and the arguments, and no object.
    static constexpr bool refreshable = sizeof...(Self) == 0 && std::is_copy_constructible_v<F> &&
                                        (std::is_copy_constructible_v<std::remove_cvref_t<Args>> && ...);

    std::function<bool(std::string&, std::string&)> make_refresher(
        std::tuple<std::remove_cvref_t<Args>...> args) const {
        return [function = function_, args = std::move(args), format = value_format_of_region()](
                   std::string& bytes, std::string& why) {
            result_type value =
                std::apply([&](const auto&... a) { return std::invoke(function, a...); }, args);
            return detail::encode_value<result_type>(format, value, bytes, why);
        };
    }
    ValueFormat value_format_of_region() const { return detail::value_format(*detail::find_region(region_)); }

    template <class Call>
    struct Target final : detail::LoadTarget {
        Target(Call& call, ValueFormat format) : call_(call), format_(format) {}
        bool accept(std::string_view stored) override {
            auto decoded = detail::decode_value<result_type>(format_, stored);
            if (!decoded) return false;  // another format, another type, or corrupt: a miss
            value = std::move(*decoded);
            return true;
        }
        bool produce(std::string& bytes, std::string& why) override {
            value = call_();
            return detail::encode_value<result_type>(format_, *value, bytes, why);
        }
        std::function<bool(std::string&, std::string&)> refresher() const override {
            return refresh ? refresh() : std::function<bool(std::string&, std::string&)>{};
        }
        std::optional<result_type> value;
        std::vector<std::string> tags() const override {
            return tags_of ? tags_of() : std::vector<std::string>{};
        }
        std::function<std::function<bool(std::string&, std::string&)>()> refresh;  // empty: no early refresh
        std::function<std::vector<std::string>()> tags_of;                         // empty: no tags
        Call& call_;
        ValueFormat format_;
    };

    std::string region_;
    std::string namespace_;
    F function_;
    bool regenerate_;
    std::optional<bool> statistics_;
    std::size_t get_many_threads_;
    TagFunction tagger_;  // empty: values have no tags
};

/// Wraps `function` so that its results are cached in `region` under the
/// namespace `ns`. The result has the same parameters and result type
/// (deduced for function pointers, non-generic lambdas and functors, and
/// member function pointers, which take the object first). The region is
/// looked up at call time, like the original.
///
/// ```cpp
/// retools::CacheRegion::add_region("short_term", 60s);
/// auto search = retools::cache_region("short_term", "myapp.search",
///     [](const std::string& term, int limit) { return expensive_search(term, limit); });
/// std::vector<std::string> found = search("bunny", 10);   // key "bunny 10"
///
/// auto load = retools::cache_region("short_term", "myapp.Repo.load", &Repo::load);
/// auto row = load(repo, 42);                              // key "42": the object is not part of it
/// ```
template <class F>
auto cache_region(std::string region, std::string ns, F function, CacheOptions options = {}) {
    static_assert(detail::DeducibleSignature<F>,
                  "retools::cache_region: cannot deduce the signature of a generic lambda or an overloaded "
                  "functor; give it explicitly: cache_region<Result(Args...)>(region, ns, function)");
    if constexpr (detail::DeducibleSignature<F>) {
        using Traits = detail::callable_traits<F>;
        return CachedFunction<F, typename Traits::result, typename Traits::self, typename Traits::args>(
            std::move(region), std::move(ns), std::move(function), std::move(options));
    }
}

/// Same, with the signature given explicitly, for generic lambdas and overloaded functors:
/// `cache_region<int(int)>("short_term", "ns", [](auto x) { return x * 2; })`.
template <class Signature, class F>
auto cache_region(std::string region, std::string ns, F function, CacheOptions options = {}) {
    using Traits = detail::signature_traits<Signature>;
    return CachedFunction<F, typename Traits::result, typename Traits::self, typename Traits::args>(
        std::move(region), std::move(ns), std::move(function), std::move(options));
}

/// Marks cached values of a cached function stale (the original's
/// `invalidate_function`): with arguments, the one value of that call;
/// without, every value it stored. Nothing is deleted: `created` goes back by
/// the region's `expires` plus an hour, so the next call regenerates.
///
/// ```cpp
/// retools::invalidate_function(search, "bunny", 10);   // one argument set
/// retools::invalidate_function(search);                // all of them
/// ```
template <class F, class R, class S, class A, class... Args>
void invalidate_function(const CachedFunction<F, R, S, A>& cached, const Args&... args) {
    if constexpr (sizeof...(Args) == 0)
        cached.invalidate_all();
    else
        cached.invalidate(args...);
}

/// Deletes cached values of a cached function, for data that must never be
/// served again (invalidation only backdates them: while one caller
/// regenerates, others may still be served the old value). With arguments,
/// the one value of that call; without, every value it stored. The next call
/// finds nothing and computes (others wait for its first value, as on a cold
/// key); Python readers see a miss too. A near cache drops its copies.
///
/// ```cpp
/// retools::evict_function(search, "bunny", 10);   // one argument set
/// retools::evict_function(search);                // all of them
/// ```
template <class F, class R, class S, class A, class... Args>
void evict_function(const CachedFunction<F, R, S, A>& cached, const Args&... args) {
    if constexpr (sizeof...(Args) == 0)
        cached.evict_all();
    else
        cached.evict(args...);
}

/// Makes every cached value stored with `tag` (see CachedFunction::with_tags)
/// stale, in every region and namespace, as invalidate_function() does for
/// one call: their `created` goes back (by the longest `expires` of the
/// regions added here, plus an hour), so the next call of each recomputes
/// it, in any process, Python retools' included. Works on the Redis of every
/// region added in this process (global_connection() when none was added),
/// each tried even when another fails (then the first ConnectionError is
/// thrown after the others); the second form on `conn` only; a near cache of this process drops the
/// values at once. Costs one round trip per Redis to read the tag's set, plus
/// one per 512 of its values (on a cluster, one per node touched); a hit of a
/// tagged value costs nothing more than an untagged one.
///
/// ```cpp
/// retools::invalidate_tag("user:42");
/// ```
void invalidate_tag(std::string_view tag);
/// Same, on `conn` only.
void invalidate_tag(std::string_view tag, const Connection& conn);

/// The original's other name for invalidate_function().
template <class F, class R, class S, class A, class... Args>
void invalidate_callable(const CachedFunction<F, R, S, A>& cached, const Args&... args) {
    invalidate_function(cached, args...);
}

}  // namespace retools
