#pragma once
// The tracking connection of near caches: one per process and Connection,
// subscribed to `__redis__:invalidate` and registered for invalidations with
// `CLIENT TRACKING on REDIRECT <its own id> BCAST PREFIX retools:<region>:`
// (RESP2, so the messages arrive as pub/sub messages on that link).
//
// Why BCAST and not the default mode: in the default mode the server
// remembers which keys each *reading* connection fetched, so every pooled
// connection (opened, replaced after a failure or max_idle, by the pool and
// not by the cache) would need tracking turned on before its first read of a
// cached key. With BCAST the one registration covers every key of the region
// whoever reads or writes it; the server sends an invalidation for each write
// to a key of the region, cached here or not, and keeps no per-key table.

#include <atomic>
#include <memory>

namespace retools::detail {

class NearCache;

/// What a region with a near cache keeps in its settings: the near cache it
/// is bound to for the connection it was last called with (set on first use).
struct NearSlot {
    struct Binding;
    NearSlot() = default;
    NearSlot(const NearSlot&) = delete;
    NearSlot& operator=(const NearSlot&) = delete;
    ~NearSlot();  // frees every binding it ever had (readers hold the settings, so the slot)
    std::atomic<const Binding*> binding{nullptr};
};

}  // namespace retools::detail
