#pragma once
// The near cache of a region (CacheRegionOptions::local): an LRU of stored
// value hashes in this process, kept correct by the tracking connection
// (cache/tracking.hpp), with the hits it served counted until they are
// flushed to Redis.
//
// Invalidate-before-fill: a read from Redis that may fill the cache takes a
// ticket first (NearRead); an invalidation of that key, a clear or a lost
// tracking connection arriving while the read is in flight makes the fill a
// no-op, so a value older than an observed invalidation is never kept.
//
// Newest-fill-wins: two reads of one key in flight at once may end in either
// order, and the invalidation between their replies may not have arrived yet
// (it comes on another connection). A fill whose `created` is older than the
// local copy, or than a read of the same key that overlapped it and already
// ended, is dropped, so a slow reader cannot put back a value that another
// caller has already seen replaced.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <retools/cache.hpp>

namespace retools::detail {

struct RegionSettings;

/// A local copy of one value hash.
struct NearValue {
    std::shared_ptr<const std::string> value;  // the `value` field, shared with readers
    double created = 0;
    double delta = 0;
};

class NearCache {
public:
    struct Ticket {
        std::uint64_t version = 0;  // the key's invalidation count when the read began
        std::uint64_t epoch = 0;    // clear() count when the read began
        bool active = false;        // whether tracking was up when the read began
    };

    /// `stats_retention`: the TTL the hit counters get when flushed (0: none).
    NearCache(std::string region, LocalCacheOptions limits, std::chrono::seconds stats_retention = {});

    /// The TTL of the hit counters this cache flushes (0: none).
    std::chrono::seconds stats_retention() const noexcept { return stats_retention_; }
    NearCache(const NearCache&) = delete;
    NearCache& operator=(const NearCache&) = delete;

    /// `retools:<region>:`: every value key of the region starts with it.
    const std::string& prefix() const noexcept { return prefix_; }

    /// The local copy of `key` (a value key), most recently used now; nullopt
    /// when there is none or tracking is down.
    std::optional<NearValue> find(const std::string& key);

    /// Before reading `key` from Redis.
    Ticket begin(const std::string& key);
    /// After the read: keeps the value unless the key was invalidated (or the
    /// cache cleared, or tracking down) since begin(). `value` null: nothing to keep.
    void end(const std::string& key, const Ticket& ticket, const NearValue* value);

    /// Drops `key` (an invalidation message, or a stale local copy).
    void invalidate(std::string_view key);
    /// Drops everything (a lost tracking connection, FLUSHDB, new settings).
    void clear();
    /// Tracking up (invalidations arrive) or down (nothing is served or kept).
    void set_active(bool active);
    bool active() const;
    /// New bounds; drops everything.
    void reconfigure(LocalCacheOptions limits);

    /// One hit served locally on `day`, counted for the next flush.
    void count_hit(std::string_view day, const std::string& key);
    /// The hit counters to add (`retools:hits:<day>:...`, count), emptied.
    std::vector<std::pair<std::string, long long>> take_hits();
    /// Puts back counts that could not be flushed.
    void restore_hits(const std::vector<std::pair<std::string, long long>>& hits);

    std::size_t size() const;
    std::size_t bytes() const;

private:
    struct Entry {
        std::string key;
        NearValue value;
        std::size_t bytes = 0;
    };
    struct Pending {
        std::uint64_t version = 0;
        std::size_t readers = 0;
        double newest_created = 0;  // of the values that overlapping reads ended with
        bool ended_with_value = false;
    };
    struct Hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    using Map = std::unordered_map<std::string, std::list<Entry>::iterator, Hash, std::equal_to<>>;

    void erase_locked(Map::iterator it);
    void evict_locked();

    const std::string region_;
    const std::string prefix_;
    mutable std::mutex mutex_;
    LocalCacheOptions limits_;
    std::chrono::seconds stats_retention_;
    std::list<Entry> lru_;  // most recently used first
    Map index_;
    std::unordered_map<std::string, Pending, Hash, std::equal_to<>> pending_;
    std::size_t bytes_ = 0;
    std::uint64_t epoch_ = 0;
    bool active_ = false;

    // Local hits per day and value key (no string is built per hit), and the
    // counts of a flush that failed, to send again.
    struct DayHits {
        std::string day;
        std::unordered_map<std::string, long long, Hash, std::equal_to<>> counts;
    };
    std::mutex hits_mutex_;
    std::vector<DayHits> hits_;  // one element, two around midnight
    std::vector<std::pair<std::string, long long>> unsent_;
};

/// One read from Redis that may fill the near cache: begin() now, end() when
/// it goes out of scope (without a value unless fill() was called).
class NearRead {
public:
    NearRead(NearCache& cache, const std::string& key)
        : cache_(cache), key_(key), ticket_(cache.begin(key)) {}
    ~NearRead() { cache_.end(key_, ticket_, filled_ ? &value_ : nullptr); }
    NearRead(const NearRead&) = delete;
    NearRead& operator=(const NearRead&) = delete;
    void fill(std::string_view value, double created, double delta) {
        value_ = NearValue{std::make_shared<const std::string>(value), created, delta};
        filled_ = true;
    }

private:
    NearCache& cache_;
    const std::string& key_;
    NearCache::Ticket ticket_;
    NearValue value_;
    bool filled_ = false;
};

/// The near cache of `region` read through `conn`, tracking started; nullptr
/// when the region has none (or `conn` goes through Sentinel).
NearCache* near_cache(const RegionSettings& region, const Connection& conn);

/// add_region(): a region's settings changed; its local copies are dropped.
void near_region_changed(const std::string& region, LocalCacheOptions limits);

/// For tests: whether the tracking connection of `conn` is subscribed, and
/// sends the local hit counts of every near cache now.
bool near_tracking_active(const Connection& conn);
void flush_near_statistics();

}  // namespace retools::detail
