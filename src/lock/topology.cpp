#include "lock/topology.hpp"

#include "client/cluster.hpp"

namespace retools::detail {

LockTopology::LockTopology(const Connection& conn) : per_slot_(conn.is_cluster()) {}

std::string LockTopology::sibling_key(const std::string& key, std::string_view suffix) const {
    if (!per_slot_) return key + std::string(suffix);
    return same_slot_key(key, suffix);
}

}  // namespace retools::detail
