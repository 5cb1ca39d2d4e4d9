#include "sentinel_set.hpp"

#include <signal.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "wait.hpp"

namespace retools::test {
namespace {

using namespace std::chrono_literals;

Connection probe(int port) {
    return Connection{ConnectionOptions{.port = port,
                                        .connect_timeout = std::chrono::milliseconds(300),
                                        .command_timeout = std::chrono::milliseconds(1000),
                                        .pool_size = 1}};
}

// SENTINEL MASTER / REPLICAS answer flat name/value arrays.
std::map<std::string, std::string> fields(const Reply& flat) {
    std::map<std::string, std::string> out;
    for (std::size_t i = 0; i + 1 < flat.size(); i += 2) out[flat[i].as_string()] = flat[i + 1].as_string();
    return out;
}

int to_int(const std::string& text) {
    try {
        return std::stoi(text);
    } catch (const std::exception&) {
        return -1;
    }
}

}  // namespace

SentinelSet::SentinelSet(SentinelSetOptions options) : options_(std::move(options)) {
    char tmpl[] = "/tmp/retools-sentinel-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    // Diskless replication without delay: the replica is in sync at once.
    std::vector<std::string> common{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"};
    common.insert(common.end(), options_.server_args.begin(), options_.server_args.end());
    nodes_.push_back(std::make_unique<RedisServer>(ServerOptions{.args = common}));
    std::vector<std::string> replica = common;
    replica.insert(replica.end(), {"--replicaof", "127.0.0.1", std::to_string(nodes_[0]->port())});
    nodes_.push_back(std::make_unique<RedisServer>(ServerOptions{.args = replica}));
    if (!wait_until([&] { return replica_of(first_replica_port()) == first_master_port(); }, 5s) ||
        !wait_replicated(5s))
        throw std::runtime_error("the replica did not sync with the master");

    for (std::size_t i = 0; i < 3; ++i) {
        int port = free_port();
        sentinel_ports_.push_back(port);
        std::ofstream conf(fmt::format("{}/sentinel-{}.conf", dir_, i));
        conf << fmt::format(
            "port {}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile {}/sentinel-{}.log\n"
            "sentinel announce-ip 127.0.0.1\n"
            "sentinel monitor {} 127.0.0.1 {} 2\n"
            "sentinel down-after-milliseconds {} {}\n"
            "sentinel failover-timeout {} {}\n"
            "sentinel parallel-syncs {} 1\n",
            port, dir_, dir_, i, options_.name, first_master_port(), options_.name,
            options_.down_after.count(), options_.name, options_.failover_timeout.count(), options_.name);
    }
    sentinels_.resize(3);
    for (std::size_t i = 0; i < 3; ++i) launch_sentinel(i);
    if (!wait_until([&] { return sentinels_ready(); }, 20s))
        throw std::runtime_error(
            fmt::format("the sentinels did not see the master, the replica and each "
                        "other within 20 s (see {})",
                        dir_));
}

SentinelSet::~SentinelSet() {
    for (auto& s : sentinels_) s.reset();  // SIGKILL and reap
    nodes_.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string SentinelSet::url() const {
    return fmt::format("redis-sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/0?master={}",
                       sentinel_ports_[0], sentinel_ports_[1], sentinel_ports_[2], options_.name);
}

void SentinelSet::launch_sentinel(std::size_t index) {
    int port = sentinel_ports_[index];
    sentinels_[index].emplace(
        ChildProcess::spawn({"redis-server", fmt::format("{}/sentinel-{}.conf", dir_, index), "--sentinel"},
                            {}, fmt::format("{}/sentinel-{}.out", dir_, index)));
    auto answers = [&] {
        try {
            return probe(port).command("PING").as_string() == "PONG";
        } catch (const Error&) {
            return false;
        }
    };
    if (!wait_until(answers, 10s))
        throw std::runtime_error(fmt::format("sentinel {} did not answer PING on port {}", index, port));
}

bool SentinelSet::sentinels_ready() const {
    for (std::size_t i = 0; i < sentinels_.size(); ++i) {
        if (!sentinels_[i]) continue;
        try {
            Connection s = probe(sentinel_ports_[i]);
            auto master = fields(s.command("SENTINEL", "MASTER", options_.name));
            if (master["flags"] != "master" || to_int(master["num-other-sentinels"]) != 2 ||
                to_int(master["num-slaves"]) < 1)
                return false;
            bool replica_ok = false;
            for (const Reply& r : s.command("SENTINEL", "REPLICAS", options_.name).as_array()) {
                auto f = fields(r);
                if (f["flags"] == "slave" && f["master-link-status"] == "ok") replica_ok = true;
            }
            if (!replica_ok) return false;
        } catch (const Error&) {
            return false;
        }
    }
    return true;
}

std::optional<int> SentinelSet::reported_master_port() const {
    for (std::size_t i = 0; i < sentinels_.size(); ++i) {
        if (!sentinels_[i]) continue;
        try {
            Reply r = probe(sentinel_ports_[i]).command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", options_.name);
            if (r.size() == 2) return to_int(r[1].as_string());
        } catch (const Error&) {}
    }
    return std::nullopt;
}

std::optional<int> SentinelSet::replica_of(int port) const {
    try {
        Reply role = probe(port).command("ROLE");
        if (role[0].as_string() == "master") return 0;
        if (role[0].as_string() == "slave" && role[3].as_string() == "connected")
            return static_cast<int>(role[2].as_integer());
        return -1;  // a replica still connecting
    } catch (const Error&) {
        return std::nullopt;
    }
}

bool SentinelSet::wait_for_master(int port, std::chrono::milliseconds within) const {
    return wait_until(
        [&] {
            for (std::size_t i = 0; i < sentinels_.size(); ++i) {
                if (!sentinels_[i]) continue;
                try {
                    Reply r = probe(sentinel_ports_[i])
                                  .command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", options_.name);
                    if (r.size() != 2 || to_int(r[1].as_string()) != port) return false;
                } catch (const Error&) {
                    return false;
                }
            }
            return replica_of(port) == 0;
        },
        within);
}

int SentinelSet::other_node(int port) const {
    return port == first_master_port() ? first_replica_port() : first_master_port();
}

int SentinelSet::failover() {
    auto current = reported_master_port();
    if (!current) throw std::runtime_error("no sentinel answers");
    int promoted = other_node(*current);
    // A sentinel aborts a failover that outlasts failover-timeout (a loaded
    // machine can make the promotion that slow) and does not retry a forced
    // one by itself: ask again, up to three times in the 15 s allowed.
    for (int attempt = 0; attempt < 3; ++attempt) {
        for (std::size_t i = 0; i < sentinels_.size(); ++i) {
            if (!sentinels_[i]) continue;
            try {
                probe(sentinel_ports_[i]).command("SENTINEL", "FAILOVER", options_.name);
            } catch (const ReplyError&) {
                // INPROG: the previous request is still under way.
            }
            break;
        }
        if (wait_for_master(promoted, 5s)) return promoted;
    }
    throw std::runtime_error(fmt::format("the sentinels did not report {} as master within 15 s", promoted));
}

pid_t SentinelSet::node_pid(int port) const {
    for (const auto& n : nodes_)
        if (n->port() == port) return n->pid();
    return -1;
}

void SentinelSet::kill_node(int port) {
    for (auto& n : nodes_)
        if (n->port() == port) n->kill();
}

bool SentinelSet::wait_replicated(std::chrono::milliseconds within) const {
    auto master = reported_master_port().value_or(first_master_port());
    try {
        Connection c = probe(master);
        return c.blocking_command(within, "WAIT", 1, within.count()).as_integer() >= 1;
    } catch (const Error&) {
        return false;
    }
}

void SentinelSet::stop_sentinel(std::size_t index) {
    auto& s = sentinels_.at(index);
    if (!s) return;
    s->signal(SIGTERM);
    if (!s->wait_for(5s)) s->signal(SIGKILL);
    s->wait_for(5s);
    s.reset();
}

void SentinelSet::start_sentinel(std::size_t index) {
    if (sentinels_.at(index)) return;
    // The old socket may linger briefly; retry a few times.
    for (int attempt = 0;; ++attempt) {
        try {
            launch_sentinel(index);
            return;
        } catch (const std::exception&) {
            sentinels_[index].reset();
            if (attempt >= 10) throw;
            std::this_thread::sleep_for(100ms);
        }
    }
}

}  // namespace retools::test
