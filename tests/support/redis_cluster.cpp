#include "redis_cluster.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "run_program.hpp"
#include "wait.hpp"

namespace retools::test {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) out.push_back(line);
    }
    return out;
}

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// `127.0.0.1:7000@17000[,hostname]` → 7000.
int port_of_address(const std::string& address) {
    auto colon = address.rfind(':', address.find('@'));
    if (colon == std::string::npos) return 0;
    return std::atoi(address.c_str() + colon + 1);
}

}  // namespace

Connection RedisCluster::direct(int port) {
    return Connection{ConnectionOptions{.port = port,
                                        .connect_timeout = std::chrono::milliseconds(300),
                                        .command_timeout = std::chrono::milliseconds(5000),
                                        .pool_size = 1}};
}

RedisCluster::RedisCluster(RedisClusterOptions options) : options_(std::move(options)) {
    if (options_.masters < 3) throw std::invalid_argument("a Redis Cluster needs at least 3 masters");
    char tmpl[] = "/tmp/retools-cluster-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    const int total = options_.masters * (1 + options_.replicas);
    for (int i = 0; i < total; ++i) {
        for (int attempt = 0;; ++attempt) {
            const int port = free_port();
            std::vector<std::string> args{
                "--cluster-enabled",          "yes",
                "--cluster-config-file",      fmt::format("{}/nodes-{}.conf", dir_, port),
                "--cluster-node-timeout",     std::to_string(options_.node_timeout.count()),
                "--repl-diskless-sync",       "yes",
                "--repl-diskless-sync-delay", "0"};
            args.insert(args.end(), options_.server_args.begin(), options_.server_args.end());
            try {
                nodes_.push_back(std::make_unique<RedisServer>(ServerOptions{.port = port, .args = args}));
                break;
            } catch (const std::exception&) {
                if (attempt >= 5) throw;  // the free port was taken meanwhile
            }
        }
    }
    std::vector<std::string> create{"/usr/bin/redis-cli", "--cluster", "create"};
    for (int port : ports()) create.push_back(fmt::format("127.0.0.1:{}", port));
    create.insert(create.end(), {"--cluster-replicas", std::to_string(options_.replicas), "--cluster-yes"});
    ProgramResult r = run_program(create, {}, 30s);
    if (r.code != 0)
        throw std::runtime_error(
            fmt::format("redis-cli --cluster create failed ({}): {}{}", r.code, r.out, r.err));
    if (!wait_ok(20s)) throw std::runtime_error("the cluster did not reach cluster_state:ok");
    if (options_.replicas > 0 && !wait_replicated(10s))
        throw std::runtime_error("the replicas did not sync with their masters");
}

RedisCluster::~RedisCluster() {
    nodes_.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::vector<int> RedisCluster::ports() const {
    std::vector<int> out;
    for (const auto& n : nodes_) out.push_back(n->port());
    return out;
}

std::string RedisCluster::url() const {
    std::string list;
    for (int port : ports()) list += fmt::format("{}127.0.0.1:{}", list.empty() ? "" : ",", port);
    return "redis-cluster://" + list;
}

ConnectionOptions RedisCluster::options() const {
    ClusterOptions cluster;
    for (int port : ports()) cluster.seeds.push_back({"127.0.0.1", port});
    return ConnectionOptions{.cluster = cluster};
}

bool RedisCluster::running(int port) const {
    for (const auto& n : nodes_)
        if (n->port() == port) return n->running();
    return false;
}

std::vector<int> RedisCluster::master_ports() const {
    for (const auto& n : nodes_) {
        if (!n->running()) continue;
        try {
            std::vector<int> out;
            for (const std::string& line : lines(direct(n->port()).command("CLUSTER", "NODES").as_string())) {
                auto w = words(line);
                if (w.size() < 3) continue;
                if (w[2].find("master") != std::string::npos && w[2].find("fail") == std::string::npos)
                    out.push_back(port_of_address(w[1]));
            }
            return out;
        } catch (const Error&) {}
    }
    return {};
}

int RedisCluster::master_of(std::uint16_t slot) const {
    for (const auto& n : nodes_) {
        if (!n->running()) continue;
        try {
            for (const Reply& range : direct(n->port()).command("CLUSTER", "SLOTS").as_array())
                if (range[0].as_integer() <= slot && slot <= range[1].as_integer())
                    return static_cast<int>(range[2][1].as_integer());
            return 0;
        } catch (const Error&) {}
    }
    return 0;
}

std::string RedisCluster::node_id(int port) const {
    return direct(port).command("CLUSTER", "MYID").as_string();
}

bool RedisCluster::wait_ok(std::chrono::milliseconds within) const {
    return wait_until(
        [&] {
            std::optional<std::string> agreed;
            for (const auto& n : nodes_) {
                if (!n->running()) continue;
                try {
                    Connection c = direct(n->port());
                    const std::string info = c.command("CLUSTER", "INFO").as_string();
                    if (info.find("cluster_state:ok") == std::string::npos ||
                        info.find("cluster_slots_assigned:16384") == std::string::npos)
                        return false;
                    // Every node names the same master for every range.
                    std::map<long long, std::string> ranges;
                    for (const Reply& range : c.command("CLUSTER", "SLOTS").as_array())
                        ranges[range[0].as_integer()] =
                            fmt::format("{}-{}:{}", range[0].as_integer(), range[1].as_integer(),
                                        range[2][1].as_integer());
                    std::string signature;
                    for (const auto& [start, text] : ranges) signature += text + ";";
                    if (agreed && *agreed != signature) return false;
                    agreed = signature;
                } catch (const Error&) {
                    return false;
                }
            }
            return agreed.has_value();
        },
        within);
}

std::string RedisCluster::state() const {
    std::string out;
    for (const auto& n : nodes_) {
        out += fmt::format("node {}: ", n->port());
        if (!n->running()) {
            out += "down\n";
            continue;
        }
        try {
            Connection c = direct(n->port());
            const std::string info = c.command("CLUSTER", "INFO").as_string();
            out += info.find("cluster_state:ok") != std::string::npos ? "ok" : "NOT ok";
            for (const Reply& range : c.command("CLUSTER", "SLOTS").as_array())
                out += fmt::format(" {}-{}:{}", range[0].as_integer(), range[1].as_integer(),
                                   range[2][1].as_integer());
        } catch (const Error& e) {
            out += e.what();
        }
        out += "\n";
    }
    return out;
}

namespace {

long long info_field(const std::string& info, const std::string& name) {
    const auto at = info.find(name + ":");
    return at == std::string::npos ? -1 : std::atoll(info.c_str() + at + name.size() + 1);
}

}  // namespace

long long RedisCluster::current_epoch(int port) {
    return info_field(direct(port).command("CLUSTER", "INFO").as_string(), "cluster_current_epoch");
}

long long RedisCluster::highest_epoch(const std::vector<int>& ports) {
    long long highest = 0;
    for (int port : ports)
        highest = std::max(
            highest, info_field(direct(port).command("CLUSTER", "INFO").as_string(), "cluster_my_epoch"));
    return highest;
}

void RedisCluster::move_slot(std::uint16_t slot, int to_port, int batch,
                             const std::function<void()>& between) {
    move_slot(slot, to_port, SlotMove{.batch = batch, .between = between});
}

void RedisCluster::move_slot(std::uint16_t slot, int to_port, const SlotMove& how) {
    const int from_port = master_of(slot);
    if (from_port == 0 || from_port == to_port) return;
    const std::string from_id = node_id(from_port), to_id = node_id(to_port);
    const std::vector<int> others = master_ports();  // read before the nodes start to disagree
    Connection from = direct(from_port), to = direct(to_port);
    to.command("CLUSTER", "SETSLOT", slot, "IMPORTING", from_id);
    from.command("CLUSTER", "SETSLOT", slot, "MIGRATING", to_id);
    std::this_thread::sleep_for(how.pause);
    for (;;) {
        std::vector<std::string> keys;
        for (const Reply& k : from.command("CLUSTER", "GETKEYSINSLOT", slot, how.batch).as_array())
            keys.push_back(k.as_string());
        if (keys.empty()) break;
        from.command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", keys);
        if (how.between) how.between();
        std::this_thread::sleep_for(how.pause);
    }
    // The target claims the slot with a new config epoch, which must be the
    // highest in the cluster: a node that has not yet heard of an epoch
    // another node took (in an earlier move, a moment ago) picks one below
    // it, and the source's gossip, still claiming the slot with that higher
    // epoch, takes the slot back from the target; once the source gives it
    // up, no node serves it (seen as MOVED ping-pong between the two, for
    // good). So wait until the target knows every master's epoch.
    wait_until([&] { return current_epoch(to_port) >= highest_epoch(others); }, std::chrono::seconds(5));
    to.command("CLUSTER", "SETSLOT", slot, "NODE", to_id);
    std::this_thread::sleep_for(how.settle);
    from.command("CLUSTER", "SETSLOT", slot, "NODE", to_id);
    for (int port : others)
        if (port != from_port && port != to_port) {
            std::this_thread::sleep_for(how.settle);
            direct(port).command("CLUSTER", "SETSLOT", slot, "NODE", to_id);
        }
}

void RedisCluster::flush_all() const {
    for (int port : master_ports()) direct(port).command("FLUSHALL");
}

void RedisCluster::kill_node(int port) {
    for (auto& n : nodes_)
        if (n->port() == port) n->kill();
}

bool RedisCluster::wait_replicated(std::chrono::milliseconds within) const {
    if (options_.replicas == 0) return true;
    // WAIT counts only the writes of its own client: compare replication
    // offsets instead (every replica at or past its master's offset).
    auto field = [](const std::string& info, const std::string& name) -> long long {
        auto at = info.find(name + ":");
        return at == std::string::npos ? -1 : std::atoll(info.c_str() + at + name.size() + 1);
    };
    return wait_until(
        [&] {
            for (int port : master_ports()) {
                try {
                    const std::string info = direct(port).command("INFO", "replication").as_string();
                    const long long offset = field(info, "master_repl_offset");
                    if (field(info, "connected_slaves") < options_.replicas) return false;
                    for (int r = 0; r < options_.replicas; ++r) {
                        auto at = info.find(fmt::format("slave{}:", r));
                        if (at == std::string::npos) return false;
                        auto off = info.find("offset=", at);
                        if (off == std::string::npos || std::atoll(info.c_str() + off + 7) < offset)
                            return false;
                    }
                } catch (const Error&) {
                    return false;
                }
            }
            return true;
        },
        within);
}

}  // namespace retools::test
