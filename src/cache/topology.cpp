// The cache on one node and on a Redis Cluster (see topology.hpp).
#include "cache/topology.hpp"

#include "cache/keys.hpp"

namespace retools::detail {

namespace {

// `cluster`: the layout's one difference, the hash tag (cache/keys.hpp).
class KeyLayout : public CacheTopology {
public:
    explicit KeyLayout(bool cluster) : cluster_(cluster) {}
    std::string value(std::string_view region, std::string_view ns, std::string_view key) const override {
        return cache_keys::value(region, ns, key, cluster_);
    }
    std::string lock(std::string_view region, std::string_view ns, std::string_view key) const override {
        return cache_keys::lock(region, ns, key, cluster_);
    }
    std::string hits(std::string_view day, std::string_view region, std::string_view ns,
                     std::string_view key) const override {
        return cache_keys::hits(day, region, ns, key, cluster_);
    }
    std::string misses(std::string_view day, std::string_view region, std::string_view ns,
                       std::string_view key) const override {
        return cache_keys::misses(day, region, ns, key, cluster_);
    }

private:
    bool cluster_;
};

class SingleNode final : public KeyLayout {
public:
    SingleNode() : KeyLayout(false) {}
    bool per_call_slots() const override { return false; }
    Pipeline& tracking(Pipeline& transaction, Pipeline&) const override { return transaction; }
    std::vector<Reply> values(const Connection& conn, const std::vector<std::string>& keys) const override {
        Reply all = conn.command("MGET", keys);
        std::vector<Reply> out;
        out.reserve(keys.size());
        for (std::size_t i = 0; i < keys.size(); ++i) out.push_back(all[i]);
        return out;
    }
    bool near_cache_possible(const Connection& conn) const override { return !conn.options().sentinel; }
};

class Cluster final : public KeyLayout {
public:
    Cluster() : KeyLayout(true) {}
    bool per_call_slots() const override { return true; }
    Pipeline& tracking(Pipeline&, Pipeline& apart) const override { return apart; }
    std::vector<Reply> values(const Connection& conn, const std::vector<std::string>& keys) const override {
        Pipeline p;
        for (const std::string& key : keys) p.command("GET", key);
        return conn.execute(p);
    }
    bool near_cache_possible(const Connection&) const override { return false; }
};

}  // namespace

const CacheTopology& cache_topology(const Connection& conn) {
    static const SingleNode single_node;
    static const Cluster cluster;
    if (conn.is_cluster()) return cluster;
    return single_node;
}

}  // namespace retools::detail
