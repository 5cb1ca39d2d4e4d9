// Liveness: the original's worker registry (retools:workers,
// retools:worker:<id>[:started|:queues]), heartbeats, and the recovery of dead
// workers' jobs on any host.
//
// A worker is alive while its heartbeat key lives (refreshed every
// heartbeat_interval, TTL heartbeat_timeout). Recovery never trusts the
// registry set (Python workers prune it by process name, FLUSHDB empties it)
// nor host names (containers share them): a processing list is put back only
// when its owner's heartbeat is gone, or when the heartbeat names a process of
// our own pid space (same boot, same pid namespace) that no longer exists.

#include "worker/liveness.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/detail/python_repr.hpp>
#include <retools/script.hpp>
#include <retools/worker.hpp>

#include "generated/lua_scripts.hpp"
#include "queue/json_limits.hpp"
#include "util/clock.hpp"
#include "util/sha1.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "util/clock.hpp"
#include "util/sha1.hpp"
#include "worker/counters.hpp"
#include "worker/topology.hpp"

namespace retools {

namespace detail {

namespace {

struct WorkerIdParts {
    std::string_view host;
    long pid = -1;
    std::string_view queues;
};

std::optional<WorkerIdParts> split_worker_id(std::string_view id) {
    auto a = id.find(':');
    if (a == std::string_view::npos) return std::nullopt;
    auto b = id.find(':', a + 1);
    if (b == std::string_view::npos) return std::nullopt;
    WorkerIdParts parts;
    parts.host = id.substr(0, a);
    auto pid_text = id.substr(a + 1, b - a - 1);
    long pid = 0;
    if (pid_text.empty()) return std::nullopt;
    for (char c : pid_text) {
        if (c < '0' || c > '9' || pid > (LONG_MAX - 9) / 10) return std::nullopt;
        pid = pid * 10 + (c - '0');
    }
    parts.pid = pid;
    parts.queues = id.substr(b + 1);
    return parts;
}

bool process_alive(long pid) {
    if (pid <= 0 || pid > INT_MAX) return false;
    if (::kill(static_cast<pid_t>(pid), 0) == 0) return true;
    return errno == EPERM;  // exists, owned by someone else
}

std::vector<std::string> split_commas(std::string_view text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto comma = text.find(',', start);
        out.emplace_back(
            text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return out;
}

std::mutex active_mutex;
std::set<std::string, std::less<>>& active_ids() {
    static auto* ids = new std::set<std::string, std::less<>>;
    return *ids;
}

// The heartbeat of `id`: nullopt when there is none (or the key is not a string).
std::optional<std::string> read_heartbeat(const Connection& conn, std::string_view id) {
    Reply r = conn.command("GET", queue_keys::heartbeat(id));
    if (r.is_error() || r.is_nil()) return std::nullopt;
    return r.as_string();
}

// Dead by liveness: no heartbeat, or one naming a gone process of our pid space.
// Returns the heartbeat value recovery must still find (empty: none), or
// nullopt when the owner is alive.
std::optional<std::string> dead_owner(const Connection& conn, std::string_view id) {
    auto hb = read_heartbeat(conn, id);
    if (!hb) return std::string();
    if (heartbeat_owner_gone(*hb)) return hb;
    return std::nullopt;
}

}  // namespace

std::string hostname() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
    return buf;
}

const std::string& pid_space() {
    static const std::string space = [] {
        std::string boot;
        std::ifstream in("/proc/sys/kernel/random/boot_id");
        std::getline(in, boot);
        struct stat st {};
        unsigned long long ns = ::stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
        return fmt::format("{}/{}", boot, ns);
    }();
    return space;
}

bool heartbeat_owner_gone(std::string_view heartbeat, std::string_view own_instance) {
    if (json_depth(heartbeat, 4) > 4) return false;
    nlohmann::json hb = nlohmann::json::parse(heartbeat, nullptr, false);
    if (!hb.is_object()) return false;
    auto host = hb.find("host");
    auto space = hb.find("pid_space");
    auto pid = hb.find("pid");
    if (host == hb.end() || space == hb.end() || pid == hb.end() || !host->is_string() ||
        !space->is_string() || !pid->is_number_integer())
        return false;
    if (*host != hostname() || *space != pid_space()) return false;
    long long p = pid->get<long long>();
    if (p == static_cast<long long>(::getpid())) {
        // Our pid: a predecessor that had it is dead; not a run in this process.
        auto instance = hb.find("instance");
        if (!own_instance.empty())
            return instance == hb.end() || !instance->is_string() || *instance != own_instance;
        auto id = hb.find("id");
        return id != hb.end() && id->is_string() && !working_here(id->get_ref<const std::string&>());
    }
    return !process_alive(static_cast<long>(p));
}

namespace {

// The queues whose processing lists a worker may hold on a cluster: its
// `:queues` key and the queue part of its id (the original's
// `<host>:<pid>:<queues>`), for a worker whose keys are half gone.
std::vector<std::string> served_queues(const Connection& conn, std::string_view worker_id) {
    std::set<std::string> names;
    Reply r = conn.command("GET", queue_keys::worker_queues(worker_id));
    if (!r.is_error() && !r.is_nil())
        for (auto& q : split_commas(r.view())) names.insert(std::move(q));
    if (auto parts = split_worker_id(worker_id))
        for (auto& q : split_commas(parts->queues)) names.insert(std::move(q));
    std::vector<std::string> out;
    for (const auto& q : names)
        if (!q.empty()) out.push_back(q);
    return out;
}

}  // namespace

// recover_worker on a Redis Cluster: one processing list per queue, each in
// its queue's slot, while the failed list, the death counts, the counters and
// the registry live elsewhere. Per list: death counts are bumped and poison
// or unreadable entries filed in retools:failed first (separate commands),
// then one script puts the rest back at the head of the queue and drops those
// filed. A crash between the two duplicates a job, never loses one. The
// liveness check is not atomic with the move: two recoverers of one dead
// worker may both count its death, but each entry moves once (the script).
Recovered recover_worker_on_cluster(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                                    std::size_t max_recoveries, bool unregister,
                                    std::string_view expected_heartbeat) {
    // Moves the entries not already filed in retools:failed to the head of the
    // queue, keeping their order (src/worker/lua/recover_cluster.lua).
    static const Script move_back{std::string(lua::worker_recover_cluster)};
    Recovered out;
    Reply hb = conn.command("GET", queue_keys::heartbeat(worker_id));
    if (mode == RecoverMode::dead) {
        if (hb.is_error() ||
            (!hb.is_nil() && (expected_heartbeat.empty() || hb.view() != expected_heartbeat))) {
            out.alive = true;
            return out;
        }
    }
    const bool counting = mode != RecoverMode::resync;
    std::size_t threads = 1;
    if (counting) {
        Reply th = conn.command("GET", queue_keys::worker_threads(worker_id));
        if (!th.is_error() && !th.is_nil()) {
            try {
                threads = static_cast<std::size_t>(std::max(1LL, std::stoll(th.as_string())));
            } catch (const std::exception&) {}
        }
    }
    const double now = unix_now();
    for (const auto& q : served_queues(conn, worker_id)) {
        const std::string pk = queue_keys::processing(worker_id, q, true);
        Reply list = conn.command("LRANGE", pk, 0, -1);
        if (list.is_error())
            throw QueueError(fmt::format("retools: {} is not a list: {}", pk, list.error_message()));
        const std::size_t len = list.size();
        if (len == 0) continue;
        // Deaths count for the oldest <:threads> entries: those that may have been running.
        std::vector<std::string> filed;
        Pipeline counts;
        std::vector<std::size_t> counted;
        for (std::size_t i = 0; i < len; ++i) {
            std::string_view e = list[i].view();
            auto nl = e.find('\n');
            if (nl == std::string_view::npos || nl == 0) {
                FailedJob f{std::string(e), "", "unreadable processing-list entry", std::string(worker_id),
                            now};
                conn.command("RPUSH", queue_keys::failed, f.to_json()).check();
                filed.emplace_back(e);
            } else if (counting && i < threads) {
                counts.command("HINCRBY", queue_keys::recoveries, sha1_hex(e), 1);
                counts.command("EXPIRE", queue_keys::recoveries, 604800);
                counted.push_back(i);
            }
        }
        if (!counts.empty()) {
            auto replies = conn.execute(counts);
            for (std::size_t k = 0; k < counted.size(); ++k) {
                const Reply& c = replies[2 * k];
                if (c.is_error() || max_recoveries == 0 ||
                    c.as_integer() < static_cast<long long>(max_recoveries))
                    continue;
                std::string_view e = list[counted[k]].view();
                auto nl = e.find('\n');
                FailedJob f{std::string(e.substr(nl + 1)), std::string(e.substr(0, nl)),
                            fmt::format("worker died {} times while running this job", c.as_integer()),
                            std::string(worker_id), now};
                conn.command("RPUSH", queue_keys::failed, f.to_json()).check();
                conn.command("HDEL", queue_keys::recoveries, sha1_hex(e));
                filed.emplace_back(e);
            }
        }
        Reply n = move_back(conn, {pk, queue_keys::queue(q, true)}, filed);
        out.requeued += static_cast<std::size_t>(n.as_integer());
        out.quarantined += filed.size();
    }
    Pipeline p;
    if (out.quarantined > 0) {
        const StatPeriods periods = stat_periods(now);
        for (std::string_view c : {"processed", "failed"}) {
            std::string base = fmt::format("{}{}", queue_keys::stat_prefix, c);
            const auto n = static_cast<long long>(out.quarantined);
            p.command("INCRBY", base, n);
            p.command("INCRBY", base + ":" + periods.day, n)
                .command("EXPIRE", base + ":" + periods.day, 15552000);
            p.command("INCRBY", base + ":" + periods.hour, n)
                .command("EXPIRE", base + ":" + periods.hour, 172800);
        }
    }
    if (unregister) {
        p.command("SREM", queue_keys::workers, worker_id);
        for (const auto& k : {queue_keys::worker(worker_id), queue_keys::worker_started(worker_id),
                              queue_keys::worker_queues(worker_id), queue_keys::worker_threads(worker_id)})
            p.command("DEL", k);
    }
    if (mode == RecoverMode::dead) {
        if (!expected_heartbeat.empty()) p.command("DEL", queue_keys::heartbeat(worker_id));
        p.command("ZREM", queue_keys::heartbeats, worker_id);
    }
    if (!p.empty()) conn.execute(p);  // bookkeeping: a key of the wrong type only skips its part
    return out;
}

Recovered recover_worker(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                         std::size_t max_recoveries, bool unregister, std::string_view expected_heartbeat) {
    return worker_topology(conn).recover(conn, worker_id, mode, max_recoveries, unregister,
                                         expected_heartbeat);
}

Recovered recover_worker_on_node(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                                 std::size_t max_recoveries, bool unregister,
                                 std::string_view expected_heartbeat) {
    // One atomic call (src/worker/lua/recover.lua, which lists its KEYS and
    // ARGV): {requeued, quarantined}, or {-1, 0} when the owner is alive.
    static const Script script{std::string(lua::worker_recover)};
    const double now = unix_now();
    const StatPeriods periods = stat_periods(now);
    Reply r =
        script(conn,
               {queue_keys::processing(worker_id, "", false), queue_keys::workers,
                queue_keys::worker(worker_id), queue_keys::worker_started(worker_id),
                queue_keys::worker_queues(worker_id), queue_keys::failed, queue_keys::heartbeat(worker_id),
                queue_keys::recoveries, queue_keys::worker_threads(worker_id), queue_keys::heartbeats},
               worker_id,
               mode == RecoverMode::resync ? "resync"
               : mode == RecoverMode::own  ? "own"
                                           : "dead",
               python_repr(now), static_cast<long long>(max_recoveries), expected_heartbeat,
               unregister ? "1" : "0", periods.day, periods.hour);
    Recovered out;
    long long requeued = r[0].as_integer();
    if (requeued < 0) {
        out.alive = true;
        return out;
    }
    out.requeued = static_cast<std::size_t>(requeued);
    out.quarantined = static_cast<std::size_t>(r[1].as_integer());
    return out;
}

namespace {

void add(Recovered& total, const Recovered& one) {
    total.requeued += one.requeued;
    total.quarantined += one.quarantined;
}

void recover_if_dead(const Connection& conn, std::string_view id, std::size_t max_recoveries,
                     Recovered& total) {
    if (working_here(id)) return;
    auto expected = dead_owner(conn, id);
    if (!expected) return;
    add(total, recover_worker(conn, id, RecoverMode::dead, max_recoveries, true, *expected));
}

}  // namespace

Recovered recover_dead_workers(const Connection& conn, std::chrono::milliseconds heartbeat_timeout,
                               std::size_t max_recoveries, bool full_scan) {
    Recovered total;
    // Workers whose last beat is older than the timeout (their key has expired,
    // or is about to).
    const double stale = unix_now() - to_seconds(heartbeat_timeout);
    Reply r =
        conn.command("ZRANGEBYSCORE", queue_keys::heartbeats, "-inf", python_repr(stale), "LIMIT", 0, 100);
    if (!r.is_error())
        for (const Reply& member : r.as_array()) recover_if_dead(conn, member.view(), max_recoveries, total);
    if (!full_scan) return total;
    worker_topology(conn).for_each_holder(
        conn, [&](std::string_view id) { recover_if_dead(conn, id, max_recoveries, total); });
    return total;
}

std::size_t prune_dead_workers(const Connection& conn, std::size_t max_recoveries) {
    const std::string host = hostname();
    std::size_t requeued = 0;
    for (const Reply& member : conn.command("SMEMBERS", queue_keys::workers).as_array()) {
        std::string id = member.as_string();
        auto parts = split_worker_id(id);
        if (!parts || parts->host != host || working_here(id)) continue;
        // The original's rule: this host, process gone (our own pid, not working
        // here, is a previous process that had it)...
        if (parts->pid != static_cast<long>(::getpid()) && process_alive(parts->pid)) continue;
        // ...and, ours, never while a heartbeat says it lives (another
        // container with the same host name and pids).
        auto expected = dead_owner(conn, id);
        if (!expected) continue;
        Recovered one = recover_worker(conn, id, RecoverMode::dead, max_recoveries, true, *expected);
        requeued += one.requeued;
    }
    return requeued;
}

std::optional<std::string> claim_heartbeat(const Connection& conn, std::string_view worker_id,
                                           std::string_view instance, std::string_view heartbeat,
                                           std::chrono::milliseconds ttl) {
    // src/worker/lua/claim_heartbeat.lua: the heartbeat of another instance
    // holding the id, or nil once claimed.
    static const Script script{std::string(lua::worker_claim_heartbeat)};
    Reply r = script(conn, {queue_keys::heartbeat(worker_id)}, heartbeat, static_cast<long long>(ttl.count()),
                     fmt::format("\"instance\": \"{}\"", instance));
    if (r.is_nil()) return std::nullopt;
    return r.as_string();
}

bool claim_worker_id(const std::string& id) {
    std::lock_guard lock(active_mutex);
    return active_ids().insert(id).second;
}

void release_worker_id(const std::string& id) {
    std::lock_guard lock(active_mutex);
    active_ids().erase(id);
}

bool working_here(std::string_view id) {
    std::lock_guard lock(active_mutex);
    return active_ids().count(id) != 0;
}

std::vector<std::string> split_queue_names(std::string_view text) {
    return split_commas(text);
}

}  // namespace detail

// ---- Worker members -------------------------------------------------------------------

std::vector<std::string> Worker::get_worker_ids(const Connection& conn) {
    std::vector<std::string> ids;
    for (const Reply& r : conn.command("SMEMBERS", detail::queue_keys::workers).as_array())
        ids.push_back(r.as_string());
    return ids;
}

std::vector<Worker> Worker::get_workers(const Connection& conn) {
    std::vector<Worker> workers;
    for (const auto& id : get_worker_ids(conn)) {
        try {
            workers.push_back(from_id(id, conn));
        } catch (const QueueError&) {
            // unregistered meanwhile
        }
    }
    return workers;
}

std::size_t Worker::requeue_orphans(const Connection& conn) {
    const std::size_t default_max_recoveries = WorkerOptions{}.max_recoveries;
    std::size_t requeued = detail::prune_dead_workers(conn, default_max_recoveries);
    auto r =
        detail::recover_dead_workers(conn, WorkerOptions{}.heartbeat_timeout, default_max_recoveries, true);
    return requeued + r.requeued;
}

}  // namespace retools
