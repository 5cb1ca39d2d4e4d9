#pragma once
// The one place where the lock component tells a single node from a Redis
// Cluster: where a lock's sibling keys live, and whether a batch of locks can
// go in one script call (its keys may span hash slots on a Cluster).

#include <string>
#include <string_view>

#include <retools/connection.hpp>

namespace retools::detail {

class LockTopology {
public:
    explicit LockTopology(const Connection& conn);

    /// `<key>:fence`, `:signal`, `:waiting` of the lock `key`: the key and the
    /// suffix, or on a Cluster a name in the key's slot (`{<key>}:fence` when
    /// the key has no hash tag).
    std::string sibling_key(const std::string& key, std::string_view suffix) const;

    /// A batch of locks needs one script call per key (a Cluster: the keys
    /// span slots), not one call for all.
    bool script_per_key() const noexcept { return per_slot_; }

private:
    bool per_slot_;
};

}  // namespace retools::detail
