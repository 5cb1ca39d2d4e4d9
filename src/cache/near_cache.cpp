#include "cache/near_cache.hpp"

#include <fmt/format.h>

namespace retools::detail {
namespace {

constexpr std::size_t entry_overhead = 64;  // documented in LocalCacheOptions::max_bytes
constexpr std::size_t max_unsent = 100000;  // hit counters kept for a flush that failed

}  // namespace

NearCache::NearCache(std::string region, LocalCacheOptions limits, std::chrono::seconds stats_retention)
    : region_(std::move(region)),
      prefix_(fmt::format("retools:{}:", region_)),
      limits_(limits),
      stats_retention_(stats_retention) {}

std::optional<NearValue> NearCache::find(const std::string& key) {
    std::lock_guard lock(mutex_);
    if (!active_) return std::nullopt;
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->value;
}

NearCache::Ticket NearCache::begin(const std::string& key) {
    std::lock_guard lock(mutex_);
    Pending& p = pending_[key];
    ++p.readers;
    return Ticket{p.version, epoch_, active_};
}

void NearCache::end(const std::string& key, const Ticket& ticket, const NearValue* value) {
    std::lock_guard lock(mutex_);
    auto p = pending_.find(key);
    if (p == pending_.end()) return;  // cannot happen: begin() made it
    Pending& pending = p->second;
    bool current = pending.version == ticket.version && ticket.epoch == epoch_ && ticket.active && active_;
    if (value) {
        // Newest-fill-wins (see the header): never replace what an overlapping read saw newer.
        if (pending.ended_with_value && value->created < pending.newest_created) current = false;
        if (!pending.ended_with_value || value->created > pending.newest_created)
            pending.newest_created = value->created;
        pending.ended_with_value = true;
    }
    if (--pending.readers == 0) pending_.erase(p);
    if (!value || !current) return;
    auto it = index_.find(key);
    if (it != index_.end()) {
        if (it->second->value.created > value->created) return;  // the local copy is newer
        erase_locked(it);
    }
    const std::size_t size = key.size() + value->value->size() + entry_overhead;
    if (limits_.max_bytes != 0 && size > limits_.max_bytes) return;  // would evict everything else
    lru_.push_front(Entry{key, *value, size});
    index_.emplace(key, lru_.begin());
    bytes_ += size;
    evict_locked();
}

void NearCache::erase_locked(Map::iterator it) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
}

void NearCache::evict_locked() {
    while (!lru_.empty() && ((limits_.max_entries != 0 && lru_.size() > limits_.max_entries) ||
                             (limits_.max_bytes != 0 && bytes_ > limits_.max_bytes)))
        erase_locked(index_.find(lru_.back().key));
}

void NearCache::invalidate(std::string_view key) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end()) erase_locked(it);
    auto p = pending_.find(key);
    if (p != pending_.end()) ++p->second.version;
}

void NearCache::clear() {
    std::lock_guard lock(mutex_);
    index_.clear();
    lru_.clear();
    bytes_ = 0;
    ++epoch_;
}

void NearCache::set_active(bool active) {
    std::lock_guard lock(mutex_);
    if (active_ == active) return;
    active_ = active;
    index_.clear();
    lru_.clear();
    bytes_ = 0;
    ++epoch_;
}

bool NearCache::active() const {
    std::lock_guard lock(mutex_);
    return active_;
}

void NearCache::reconfigure(LocalCacheOptions limits) {
    std::lock_guard lock(mutex_);
    limits_ = limits;
    index_.clear();
    lru_.clear();
    bytes_ = 0;
    ++epoch_;
}

void NearCache::count_hit(std::string_view day, const std::string& key) {
    std::lock_guard lock(hits_mutex_);
    if (hits_.empty() || hits_.back().day != day) hits_.push_back(DayHits{std::string(day), {}});
    auto& counts = hits_.back().counts;
    auto it = counts.find(key);
    if (it != counts.end())
        ++it->second;
    else
        counts.emplace(key, 1);
}

std::vector<std::pair<std::string, long long>> NearCache::take_hits() {
    std::vector<DayHits> taken;
    std::vector<std::pair<std::string, long long>> out;
    {
        std::lock_guard lock(hits_mutex_);
        taken.swap(hits_);
        out.swap(unsent_);
    }
    for (const DayHits& d : taken)
        for (const auto& [key, n] : d.counts) {
            // retools:<region>:<ns>:<key> -> retools:hits:<day>:<region>:<ns>:<key>
            std::string hit;
            hit.reserve(key.size() + d.day.size() + 6);
            hit.append("retools:hits:").append(d.day).append(":").append(std::string_view(key).substr(8));
            out.emplace_back(std::move(hit), n);
        }
    return out;
}

void NearCache::restore_hits(const std::vector<std::pair<std::string, long long>>& hits) {
    std::lock_guard lock(hits_mutex_);
    // While Redis is unreachable for long, counts are dropped rather than grow without bound.
    if (unsent_.size() + hits.size() > max_unsent) return;
    unsent_.insert(unsent_.end(), hits.begin(), hits.end());
}

std::size_t NearCache::size() const {
    std::lock_guard lock(mutex_);
    return lru_.size();
}

std::size_t NearCache::bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
}

}  // namespace retools::detail
