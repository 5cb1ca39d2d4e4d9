// Reliable fetch: jobs move atomically from their queue to the worker's
// processing list and leave it only when finished; waiting for jobs never
// takes one off a queue.
//
// Taking jobs from several queues in priority order must be atomic and must
// also block until a job arrives. No single Redis command does both (BLMOVE
// has one source; BLPOP/BLMPOP take the job off the queue into a socket
// buffer, where a SIGKILL loses it). So the two are split:
//  - taking: one Lua script (src/worker/lua/fetch.lua) moves up to N jobs
//    from the first non-empty queues, in priority order, to
//    `retools:processing:<id>`; the
//    same call applies the finish bookkeeping of the jobs finished since the
//    last call, so a busy worker makes one round trip per batch;
//  - waiting: when every queue was empty, one connection per queue blocks in
//    `BLMOVE q q LEFT LEFT`, which pops the head and pushes it back on the
//    same side: the list is unchanged, nothing is ever in flight, yet the call
//    returns the instant the list holds a job. The worker then runs the script
//    again, so priority order is decided by the script, not by which waiter
//    woke first.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/detail/python_repr.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "generated/lua_scripts.hpp"
#include "util/clock.hpp"
#include "util/sha1.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "util/clock.hpp"
#include "util/sha1.hpp"
#include "worker/counters.hpp"
#include "worker/fetch.hpp"
#include "worker/topology.hpp"

namespace retools::detail {

namespace {

// Takes jobs and applies the finish operations of the last batch in one call:
// src/worker/lua/fetch.lua lists its KEYS, ARGV (the operations D, R, F, S, Z)
// and reply.
const Script& fetch_script() {
    static const Script script{std::string(lua::worker_fetch)};
    return script;
}

}  // namespace

TakenJob TakenJob::from_entry(std::string entry) {
    TakenJob job;
    auto nl = entry.find('\n');
    job.split = nl == std::string::npos ? 0 : nl;
    job.entry = std::move(entry);
    return job;
}

// ---- FinishBatch ------------------------------------------------------------------

void FinishBatch::add(FinishedJob&& done, std::string_view worker_id, double now) {
    JobOutcome& o = done.outcome;
    if (o.status == JobStatus::requeue) {
        requeue(done.job);
        return;
    }
    std::string failed_entry;
    if (o.status == JobStatus::failed)
        failed_entry = FailedJob{std::string(done.job.payload()), std::string(done.job.queue()), o.error,
                                 std::string(worker_id), now}
                           .to_json();
    // The removal first: what follows applies only if it removed the job.
    args_.emplace_back("D");
    args_.push_back(std::move(done.job.entry));
    if (o.status == JobStatus::failed) {
        args_.emplace_back("F");
        args_.push_back(std::move(failed_entry));
    } else if (o.status == JobStatus::retry) {
        args_.emplace_back("Z");
        args_.push_back(python_repr(o.retry_at));
        args_.push_back(std::move(o.retry_member));
    }
    if (!o.result.empty() && !o.job_id.empty()) {
        args_.emplace_back("S");
        args_.push_back(queue_keys::result(o.job_id));
        args_.push_back(std::move(o.result));
        args_.push_back(std::to_string(o.result_ttl > 0 ? o.result_ttl : 1));
    }
}

void FinishBatch::copy_group(std::size_t at, FinishBatch& into) const {
    auto width = [](const std::string& op) -> std::size_t { return op == "S" ? 4 : op == "Z" ? 3 : 2; };
    if (at >= args_.size()) return;
    std::size_t end = at + width(args_[at]);
    while (end < args_.size() && args_[end] != "D" && args_[end] != "R") end += width(args_[end]);
    end = std::min(end, args_.size());
    into.args_.insert(into.args_.end(), args_.begin() + static_cast<std::ptrdiff_t>(at),
                      args_.begin() + static_cast<std::ptrdiff_t>(end));
}

void FinishBatch::append(FinishBatch& other) {
    for (auto& a : other.args_) args_.push_back(std::move(a));
    other.args_.clear();
}

void FinishBatch::requeue(const TakenJob& job) {
    args_.emplace_back("R");
    args_.push_back(job.entry);
}

// ---- ReliableFetch ----------------------------------------------------------------

const StatPeriods& ReliableFetch::periods(double now) {
    if (now >= period_end_ || now < period_end_ - 3600) {
        periods_ = stat_periods(now);
        period_end_ = (std::floor(now / 3600) + 1) * 3600;
    }
    return periods_;
}

namespace {

// One node: one script call per exchange, atomic.
class SingleNodeFetch final : public ReliableFetch {
public:
    SingleNodeFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues)
        : ReliableFetch(std::move(conn), std::move(worker_id), queues) {
        keys_.push_back(queue_keys::processing(worker_id_, "", false));
        keys_.push_back(queue_keys::worker(worker_id_));
        keys_.emplace_back(queue_keys::failed);
        keys_.emplace_back(queue_keys::delayed_all);
        for (const auto& q : queues) keys_.push_back(queue_keys::queue(q, false));
    }

    std::string exchange(const FinishBatch& finished, std::size_t count, bool idle, const Beat* beat,
                         std::vector<TakenJob>& out, FinishBatch* kept) override;

private:
    std::vector<std::string> keys_;
};

std::string SingleNodeFetch::exchange(const FinishBatch& finished, std::size_t count, bool idle,
                                      const Beat* beat, std::vector<TakenJob>& out, FinishBatch* kept) {
    const double now = unix_now();
    const StatPeriods& period = periods(now);
    static const std::string none;
    Reply reply = fetch_script().run(
        conn_, keys_, count, python_repr(now), idle ? "1" : "0", worker_id_, period.day, period.hour,
        beat ? beat->json : none, beat ? beat->ttl_ms : 0LL, beat ? beat->queues : none,
        beat ? beat->started : none, beat ? static_cast<long long>(beat->threads) : 1LL, finished.args());
    const Reply& taken = reply[0];
    std::size_t n = taken.size();
    out.reserve(out.size() + n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(TakenJob::from_entry(std::string(taken[i].view())));
    if (kept)
        for (const Reply& at : reply[2].as_array())
            finished.copy_group(static_cast<std::size_t>(at.as_integer()), *kept);
    return reply[1].as_string();
}

}  // namespace

std::unique_ptr<ReliableFetch> make_single_node_fetch(Connection conn, std::string worker_id,
                                                      const std::vector<std::string>& queues) {
    return std::make_unique<SingleNodeFetch>(std::move(conn), std::move(worker_id), queues);
}

// ---- ReliableFetch on a Redis Cluster -----------------------------------------------

namespace {

// One queue's take-and-finish call on a Cluster: src/worker/lua/fetch_cluster.lua
// lists its KEYS, ARGV (five per finish operation) and reply.
const Script& cluster_fetch_script() {
    static const Script script{std::string(lua::worker_fetch_cluster)};
    return script;
}

// One finished job's operations in a FinishBatch.
struct Group {
    std::size_t at = 0;  // position of its 'D' or 'R'
    bool requeue = false;
    std::string_view entry, failed, score, member, result_key, result, result_ttl;
    std::string_view queue() const {
        auto nl = entry.find('\n');
        return nl == std::string_view::npos ? std::string_view{} : entry.substr(0, nl);
    }
};

std::vector<Group> parse_groups(const std::vector<std::string>& a) {
    std::vector<Group> groups;
    for (std::size_t i = 0; i < a.size();) {
        const std::string& op = a[i];
        if (op == "D" || op == "R") {
            groups.push_back({.at = i, .requeue = op == "R", .entry = a[i + 1]});
            i += 2;
        } else if (op == "F") {
            groups.back().failed = a[i + 1];
            i += 2;
        } else if (op == "Z") {
            groups.back().score = a[i + 1];
            groups.back().member = a[i + 2];
            i += 3;
        } else {  // "S"
            groups.back().result_key = a[i + 1];
            groups.back().result = a[i + 2];
            groups.back().result_ttl = a[i + 3];
            i += 4;
        }
    }
    return groups;
}

void add_counters(Pipeline& p, std::string_view name, long long n, const StatPeriods& periods) {
    if (n <= 0) return;
    std::string base = std::string(queue_keys::stat_prefix).append(name);
    p.command("INCRBY", base, n);
    p.command("INCRBY", base + ":" + periods.day, n).command("EXPIRE", base + ":" + periods.day, 15552000);
    p.command("INCRBY", base + ":" + periods.hour, n).command("EXPIRE", base + ":" + periods.hour, 172800);
}

std::string json_string(std::string_view s) {
    return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A Redis Cluster: three steps over the slots.
// The steps, in this order, so that a crash between two of them duplicates a
// job rather than losing it:
//  1. failed-list entries and results of finished jobs (their own slots);
//  2. one script per queue (its slot): remove finished jobs from the processing
//     list (retries go to the queue's delayed set in the same call), put
//     requeued ones back, promote due jobs, and take jobs for the first queue;
//     then, while more are wanted, take from the next queues that hold jobs,
//     one call each, in priority order;
//  3. counters, death counts, heartbeat, registry, `retools:worker:<id>`.
class ClusterFetch final : public ReliableFetch {
public:
    ClusterFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues)
        : ReliableFetch(std::move(conn), std::move(worker_id), queues) {}

    std::string exchange(const FinishBatch& finished, std::size_t count, bool idle, const Beat* beat,
                         std::vector<TakenJob>& out, FinishBatch* kept) override;

private:
    // What step 2 finished and took, for step 3.
    struct Done {
        long long processed = 0, failed = 0;
        std::vector<std::string_view> removed_entries;
        std::string current_queue;  // of the first job taken, for `retools:worker:<id>`
    };
    // Step 1; returns the groups kept (their failed entry had nowhere to go).
    std::vector<bool> store_outcomes(const std::vector<Group>& groups, const FinishBatch& finished,
                                     FinishBatch* kept, std::vector<std::string>& notes);
    // Step 2.
    Done finish_and_take(const std::vector<Group>& groups, const std::vector<bool>& skip,
                         const FinishBatch& finished, std::size_t count, double now,
                         std::vector<TakenJob>& out, FinishBatch* kept, std::vector<std::string>& notes);
    // Step 3: `taken` is the first job taken, if any.
    void bookkeeping(const Done& done, const StatPeriods& period, const Beat* beat, bool idle, double now,
                     const TakenJob* taken);
};

std::string ClusterFetch::exchange(const FinishBatch& finished, std::size_t count, bool idle,
                                   const Beat* beat, std::vector<TakenJob>& out, FinishBatch* kept) {
    const double now = unix_now();
    const StatPeriods& period = periods(now);
    std::vector<std::string> notes;
    const std::vector<Group> groups = parse_groups(finished.args());
    const std::vector<bool> skip = store_outcomes(groups, finished, kept, notes);
    const std::size_t before = out.size();
    const Done done = finish_and_take(groups, skip, finished, count, now, out, kept, notes);
    bookkeeping(done, period, beat, idle, now, out.size() > before ? &out[before] : nullptr);
    std::string note;
    for (const auto& n : notes) {
        if (!note.empty()) note += "; ";
        note += n;
    }
    return note;
}

// 1. What must exist before a finished job leaves its processing list.
std::vector<bool> ClusterFetch::store_outcomes(const std::vector<Group>& groups, const FinishBatch& finished,
                                               FinishBatch* kept, std::vector<std::string>& notes) {
    std::vector<bool> skip(groups.size(), false);
    Pipeline first;
    std::vector<std::size_t> failed_at;  // group of each RPUSH onto retools:failed, by reply index
    for (std::size_t g = 0; g < groups.size(); ++g) {
        const Group& grp = groups[g];
        if (!grp.failed.empty()) {
            failed_at.resize(first.size() + 1, groups.size());
            failed_at[first.size()] = g;
            first.command("RPUSH", queue_keys::failed, grp.failed);
        }
        if (!grp.result_key.empty())
            first.command("DEL", grp.result_key)
                .command("RPUSH", grp.result_key, grp.result)
                .command("EXPIRE", grp.result_key, grp.result_ttl);
    }
    if (first.empty()) return skip;
    auto replies = conn_.execute(first);
    for (std::size_t i = 0; i < replies.size() && i < failed_at.size(); ++i)
        if (failed_at[i] < groups.size() && replies[i].is_error()) {
            skip[failed_at[i]] = true;
            if (kept) finished.copy_group(groups[failed_at[i]].at, *kept);
        }
    if (std::count(skip.begin(), skip.end(), true) > 0)
        notes.push_back(fmt::format("finished job(s) kept in the processing lists until {} is a list",
                                    queue_keys::failed));
    return skip;
}

// 2. Per queue: finish, promote, take. The worker's queues in priority
// order, then any other queue a finished job came from.
ClusterFetch::Done ClusterFetch::finish_and_take(const std::vector<Group>& groups,
                                                 const std::vector<bool>& skip, const FinishBatch& finished,
                                                 std::size_t count, double now, std::vector<TakenJob>& out,
                                                 FinishBatch* kept, std::vector<std::string>& notes) {
    std::vector<std::string> names = queues_;
    for (const Group& grp : groups)
        if (std::find(names.begin(), names.end(), grp.queue()) == names.end() && !grp.queue().empty())
            names.emplace_back(grp.queue());
    struct Call {
        std::vector<std::string> args;
    };
    std::vector<Call> calls(names.size());
    for (std::size_t q = 0; q < names.size(); ++q) {
        auto& a = calls[q].args;
        a = {std::to_string(q == 0 ? count : 0), python_repr(now), names[q],
             q < queues_.size() ? "100" : "0"};
    }
    for (std::size_t g = 0; g < groups.size(); ++g) {
        if (skip[g]) continue;
        const Group& grp = groups[g];
        auto it = std::find(names.begin(), names.end(), grp.queue());
        if (it == names.end()) continue;  // an unreadable entry: recovery files it
        auto& a = calls[static_cast<std::size_t>(it - names.begin())].args;
        a.emplace_back(grp.requeue ? "R" : "D");
        a.push_back(std::to_string(grp.at));
        a.emplace_back(grp.entry);
        a.emplace_back(grp.score);
        a.emplace_back(grp.member);
    }
    const Script& script = cluster_fetch_script();
    auto run = [&](std::size_t q, const std::vector<std::string>& args) {
        return script(conn_,
                      {queue_keys::processing(worker_id_, names[q], true),
                       queue_keys::delayed(names[q], true), queue_keys::queue(names[q], true)},
                      args);
    };
    // One EVALSHA per queue, pipelined (one request per node); a server that
    // does not know the script yet ran nothing for it: sent again on its own.
    Pipeline second;
    for (std::size_t q = 0; q < names.size(); ++q)
        second.command("EVALSHA", script.sha(), 3, queue_keys::processing(worker_id_, names[q], true),
                       queue_keys::delayed(names[q], true), queue_keys::queue(names[q], true), calls[q].args);
    std::vector<Reply> replies = conn_.execute(second);
    for (std::size_t q = 0; q < names.size(); ++q)
        if (replies[q].is_error() && replies[q].error_message().starts_with("NOSCRIPT"))
            replies[q] = run(q, calls[q].args);
    // Any error: nothing is reported taken; what the other calls took waits in
    // the processing lists for the worker's resync, the batch is sent again.
    for (const Reply& r : replies) r.check();
    Done done;
    std::vector<long long> left(names.size(), 0);
    auto take = [&](const Reply& r, std::size_t q) {
        for (const Reply& e : r[0].as_array()) out.push_back(TakenJob::from_entry(std::string(e.view())));
        if (r[0].size() > 0 && done.current_queue.empty()) done.current_queue = names[q];
        if (r[1].size() > 0) quarantine_delayed(conn_, names[q], r[1].as_array(), worker_id_, now);
        if (!r[2].view().empty()) notes.emplace_back(r[2].view());
        left[q] = r[5].as_integer();
    };
    std::unordered_map<std::size_t, std::size_t> by_position;  // argument position → group
    for (std::size_t g = 0; g < groups.size(); ++g) by_position.emplace(groups[g].at, g);
    const std::size_t before = out.size();
    for (std::size_t q = 0; q < names.size(); ++q) {
        const Reply& r = replies[q];
        take(r, q);
        for (const Reply& pos : r[3].as_array()) {
            auto found = by_position.find(static_cast<std::size_t>(pos.as_integer()));
            if (found == by_position.end()) continue;
            const Group* grp = &groups[found->second];
            ++done.processed;
            if (!grp->failed.empty()) ++done.failed;
            done.removed_entries.push_back(grp->entry);
        }
        if (kept)
            for (const Reply& pos : r[4].as_array())
                finished.copy_group(static_cast<std::size_t>(pos.as_integer()), *kept);
    }
    try {
        for (std::size_t q = 1; q < queues_.size() && out.size() - before < count; ++q) {
            if (left[q] <= 0) continue;
            std::vector<std::string> args{std::to_string(count - (out.size() - before)), python_repr(now),
                                          names[q], "0"};
            Reply r = run(q, args);
            take(r, q);
        }
    } catch (const Error&) {
        // As for an error above: report nothing taken (resync puts it back).
        out.resize(before);
        throw;
    }
    return done;
}

// 3. Bookkeeping in other slots: losing it in a crash loses no job.
void ClusterFetch::bookkeeping(const Done& done, const StatPeriods& period, const Beat* beat, bool idle,
                               double now, const TakenJob* taken) {
    Pipeline third;
    add_counters(third, "processed", done.processed, period);
    add_counters(third, "failed", done.failed, period);
    for (std::string_view e : done.removed_entries)
        third.command("HDEL", queue_keys::recoveries, sha1_hex(e));
    std::size_t sadd_at = 0;
    if (beat) {
        third.command("SET", queue_keys::heartbeat(worker_id_), beat->json, "PX", beat->ttl_ms);
        third.command("ZADD", queue_keys::heartbeats, python_repr(now), worker_id_);
        sadd_at = third.size();
        third.command("SADD", queue_keys::workers, worker_id_);
    }
    if (taken) {
        std::string payload(taken->payload());
        if (!nlohmann::json::accept(payload)) payload = json_string(payload);
        third.command(
            "SET", queue_keys::worker(worker_id_),
            fmt::format("{{\"queue\": {}, \"run_at\": {}, \"payload\": {}}}",
                        json_string(queue_keys::queue(done.current_queue, true)), python_repr(now), payload));
    } else if (idle) {
        third.command("DEL", queue_keys::worker(worker_id_));
    }
    if (!third.empty()) {
        auto r = conn_.execute(third);
        if (beat && r[sadd_at].is_integer() && r[sadd_at].as_integer() == 1) {
            // Pruned meanwhile: register again.
            Pipeline again;
            again.command("SET", queue_keys::worker_started(worker_id_), beat->started);
            again.command("SET", queue_keys::worker_queues(worker_id_), beat->queues);
            again.command("SET", queue_keys::worker_threads(worker_id_),
                          static_cast<long long>(beat->threads));
            conn_.execute(again);
        }
    }
}

}  // namespace

std::unique_ptr<ReliableFetch> make_cluster_fetch(Connection conn, std::string worker_id,
                                                  const std::vector<std::string>& queues) {
    return std::make_unique<ClusterFetch>(std::move(conn), std::move(worker_id), queues);
}

// ---- QueueWaiter ------------------------------------------------------------------

struct QueueWaiter::Slot {
    Slot(const ConnectionOptions& options, std::string queue_key)
        : conn(options), key(std::move(queue_key)) {}
    Connection conn;  // a pool of one, so CLIENT ID names the connection that blocks
    std::string key;
    std::atomic<long long> client_id{-1};
    std::atomic<bool> done{false};
    std::thread thread;
};

QueueWaiter::QueueWaiter(const Connection& conn, const WorkerTopology& topology,
                         const std::vector<std::string>& queues, std::chrono::milliseconds block,
                         std::function<void()> on_ready)
    : control_(conn),
      block_(topology.wait_block(std::max(block, std::chrono::milliseconds(10)))),
      on_ready_(std::move(on_ready)) {
    ConnectionOptions options = conn.options();
    options.pool_size = 1;
    for (const auto& q : queues)
        slots_.push_back(std::make_unique<Slot>(options, topology.keys().queue_key(q)));
    for (auto& slot : slots_) slot->thread = std::thread([this, s = slot.get()] { run(*s); });
}

QueueWaiter::~QueueWaiter() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    cv_.notify_all();
    for (auto& slot : slots_) {
        // A waiter may be about to block: keep unblocking it until it has left.
        while (!slot->done.load()) {
            long long id = slot->client_id.load();
            if (id >= 0) {
                try {
                    // On a cluster, to the node of the waiter's queue (CLIENT names no key).
                    control_.command_for_key(slot->key, "CLIENT", "UNBLOCK", id);
                } catch (const Error&) {}
            }
            for (int i = 0; i < 20 && !slot->done.load(); ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        slot->thread.join();
    }
}

void QueueWaiter::arm() {
    {
        std::lock_guard lock(mutex_);
        ++generation_;
    }
    cv_.notify_all();
}

void QueueWaiter::run(Slot& slot) {
    std::uint64_t reported = 0;  // the generation whose wake-up this waiter already reported
    const double seconds = to_seconds(block_);
    for (;;) {
        std::uint64_t generation;
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return stop_ || generation_ > reported; });
            if (stop_) break;
            generation = generation_;
        }
        try {
            if (slot.client_id.load() < 0)
                slot.client_id = slot.conn.command_for_key(slot.key, "CLIENT", "ID").as_integer();
            Reply r =
                slot.conn.blocking_command(block_, "BLMOVE", slot.key, slot.key, "LEFT", "LEFT", seconds);
            if (!r.is_nil()) {
                reported = generation;
                on_ready_();
            }
        } catch (const Error&) {
            // The connection was dropped: a reconnect gets a new client id.
            slot.client_id = -1;
            std::unique_lock lock(mutex_);
            cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_; });
        }
    }
    slot.done = true;
}

}  // namespace retools::detail
