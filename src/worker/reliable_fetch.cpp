// Reliable fetch: jobs move atomically from their queue to the worker's
// processing list and leave it only when finished; waiting for jobs never
// takes one off a queue.
//
// Taking jobs from several queues in priority order must be atomic and must
// also block until a job arrives. No single Redis command does both (BLMOVE
// has one source; BLPOP/BLMPOP take the job off the queue into a socket
// buffer, where a SIGKILL loses it). So the two are split:
//  - taking: one Lua script (fetch_source) moves up to N jobs from the first
//    non-empty queues, in priority order, to `retools:processing:<id>`; the
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

#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "util/clock.hpp"
#include "util/sha1.hpp"
#include "worker/counters.hpp"
#include "worker/fetch.hpp"

namespace retools::detail {

namespace {

// KEYS: 1 processing list, 2 worker key, 3 failed list, 4 delayed set, 5.. queues in priority order
// ARGV: 1 jobs to take, 2 now (float seconds), 3 '1' when the worker will be idle, 4 worker id,
//       5 UTC day, 6 UTC hour (counters), 7 heartbeat JSON ('' = no beat this time), 8 its TTL in ms,
//       9 queue names, 10 start time, 11 concurrency (to register again when pruned),
//       then finish operations:
//         D <entry>                  remove a finished job from the processing list
//         R <entry>                  remove it and put its payload back at the head of its queue
//         F <failed entry json>      append to the failed list          } only if the D just
//         S <key> <value> <ttl s>    store a result (a one-element      } before removed its
//                                    list, as QueueManager::store_result) } job: resending a
//         Z <score> <member>         schedule a retry in the delayed set } batch whose reply was
//                                    (as QueueManager::retry_later)      } lost changes nothing
// A D (with what follows it) or R that cannot be applied for a key of the wrong
// type is skipped, its job left in the processing list, and its position in the
// operations returned, for the worker to send again later.
// Due delayed jobs are promoted as QueueManager::promote_due_jobs does, in the same call.
// Returns {entries taken ("<queue>\n<payload>"), notes, positions of operations kept}.
// A script error keeps the writes made before it, so no key of the wrong type
// may raise one half-way: every key written is checked first. A queue key of
// the wrong type is skipped (its queue stalls, the others do not); a finished
// job whose failed-list entry, retry or requeue has nowhere to go stays in the
// processing list (recovered once the key is fixed); a bad retools:delayed
// only stops promotion. The notes say what was skipped, for the log.
const std::string& fetch_source() {
    static const std::string source = std::string(failed_entry_lua).append(counters_lua).append(R"lua(
local function is(k, want)
  local t = redis.call('TYPE', k)['ok']
  return t == 'none' or t == want, t
end
local notes = {}
local ok1, t1 = is(KEYS[1], 'list')
if not ok1 then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t1 .. ', not a list') end
local failed_ok = is(KEYS[3], 'list')
local delayed_ok = is(KEYS[4], 'zset')
local now = ARGV[2]
local id = ARGV[4]

if ARGV[7] ~= '' then
  redis.pcall('SET', 'retools:heartbeat:' .. id, ARGV[7], 'PX', ARGV[8])
  redis.pcall('ZADD', 'retools:heartbeats', now, id)
  if redis.pcall('SADD', 'retools:workers', id) == 1 then
    redis.call('SET', 'retools:worker:' .. id .. ':started', ARGV[10])
    redis.call('SET', 'retools:worker:' .. id .. ':queues', ARGV[9])
    redis.call('SET', 'retools:worker:' .. id .. ':threads', ARGV[11])
  end
end

local processing = KEYS[1]
local has_rec = redis.call('TYPE', 'retools:recoveries')['ok'] == 'hash'
local i, n = 12, #ARGV
local removed = false
local processed, failed, kept = 0, 0, {}
while i <= n do
  local op = ARGV[i]
  if op == 'D' then
    local e, nxt = ARGV[i + 1], ARGV[i + 2]
    if (nxt == 'F' and not failed_ok) or (nxt == 'Z' and not delayed_ok) then
      removed = false
      kept[#kept + 1] = i - 12
    else
      removed = redis.call('LREM', processing, 1, e) == 1
      if removed then
        processed = processed + 1
        if has_rec then redis.call('HDEL', 'retools:recoveries', redis.sha1hex(e)) end
      end
    end
    i = i + 2
  elseif op == 'R' then
    local e = ARGV[i + 1]
    local nl = string.find(e, '\n', 1, true)
    local key = 'retools:queue:' .. string.sub(e, 1, (nl or 1) - 1)
    if nl and is(key, 'list') then
      if redis.call('LREM', processing, 1, e) == 1 then redis.call('LPUSH', key, string.sub(e, nl + 1)) end
    elseif nl then
      kept[#kept + 1] = i - 12
    end
    i = i + 2
  elseif op == 'F' then
    if removed then
      redis.call('RPUSH', KEYS[3], ARGV[i + 1])
      failed = failed + 1
    end
    i = i + 2
  elseif op == 'S' then
    if removed then
      redis.call('DEL', ARGV[i + 1])
      redis.call('RPUSH', ARGV[i + 1], ARGV[i + 2])
      redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'Z' then
    if removed then redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i + 2]) end
    i = i + 3
  else
    return redis.error_reply('retools: unknown finish operation ' .. tostring(op))
  end
end
count_finished(processed, failed, ARGV[5], ARGV[6])
if #kept > 0 then
  notes[#notes + 1] = #kept .. ' finished job(s) kept in ' .. processing ..
    ' until retools:failed, retools:delayed or their queue key holds the right type'
end

if not delayed_ok then
  notes[#notes + 1] = 'retools:delayed is not a sorted set: due jobs are not promoted'
elseif not failed_ok then
  notes[#notes + 1] = 'retools:failed is not a list: due jobs are not promoted'
else
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, m in ipairs(due) do
    local ok, d = pcall(cjson.decode, m)
    local problem, payload, queue = 'malformed entry in retools:delayed', m, ''
    if ok and type(d) == 'table' and type(d.queue) == 'string' and type(d.payload) == 'string'
       and d.queue ~= '' and not string.find(d.queue, '[:,]') then
      local pushed = redis.pcall('RPUSH', 'retools:queue:' .. d.queue, d.payload)
      if type(pushed) == 'table' and pushed.err then
        problem, payload, queue = 'retools:queue:' .. d.queue .. ' refused the job: ' .. pushed.err, d.payload, d.queue
      else
        problem = nil
      end
    end
    if problem then
      redis.call('RPUSH', KEYS[3], failed_entry(payload, queue, id, problem, tonumber(now)))
    end
    redis.call('ZREM', KEYS[4], m)
    if not problem then redis.pcall('SADD', 'retools:queues', d.queue) end
  end
end

local want = tonumber(ARGV[1])
local out = {}
for k = 5, #KEYS do
  if want <= 0 then break end
  local okq, tq = is(KEYS[k], 'list')
  if not okq then
    notes[#notes + 1] = KEYS[k] .. ' holds a ' .. tq .. ', not a list: skipped'
  else
    local items = redis.call('LRANGE', KEYS[k], 0, want - 1)
    local got = #items
    if got > 0 then
      redis.call('LTRIM', KEYS[k], got, -1)
      local name = string.sub(KEYS[k], 15)
      for j = 1, got do
        local e = name .. '\n' .. items[j]
        items[j] = e
        out[#out + 1] = e
      end
      redis.call('RPUSH', processing, unpack(items))
      want = want - got
    end
  end
end

if #out > 0 then
  local e = out[1]
  local nl = string.find(e, '\n', 1, true)
  local payload = string.sub(e, nl + 1)
  if not pcall(cjson.decode, payload) then payload = cjson.encode(payload) end
  redis.call('SET', KEYS[2], '{"queue": ' .. cjson.encode('retools:queue:' .. string.sub(e, 1, nl - 1)) ..
    ', "run_at": ' .. now .. ', "payload": ' .. payload .. '}')
elseif ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
end
return {out, table.concat(notes, '; '), kept}
)lua");
    return source;
}

const Script& fetch_script() {
    static const Script script{fetch_source()};
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

ReliableFetch::ReliableFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues)
    : conn_(std::move(conn)), worker_id_(std::move(worker_id)), queues_(queues) {
    keys_.push_back(queue_keys::processing(worker_id_, "", false));
    keys_.push_back(queue_keys::worker(worker_id_));
    keys_.emplace_back(queue_keys::failed);
    keys_.emplace_back(queue_keys::delayed_all);
    for (const auto& q : queues) keys_.push_back(queue_keys::queue(q, false));
}

std::string ReliableFetch::exchange(const FinishBatch& finished, std::size_t count, bool idle,
                                    const Beat* beat, std::vector<TakenJob>& out, FinishBatch* kept) {
    if (conn_.is_cluster()) return exchange_cluster(finished, count, idle, beat, out, kept);
    const double now = unix_now();
    // The day and hour change rarely: formatted once per hour, not per call.
    if (now >= period_end_ || now < period_end_ - 3600) {
        periods_ = stat_periods(now);
        period_end_ = (std::floor(now / 3600) + 1) * 3600;
    }
    static const std::string none;
    Reply reply = fetch_script().run(
        conn_, keys_, count, python_repr(now), idle ? "1" : "0", worker_id_, periods_.day, periods_.hour,
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

// ---- ReliableFetch on a Redis Cluster -----------------------------------------------

namespace {

// KEYS: 1 processing list of this queue, 2 its delayed set, 3 the queue (one slot).
// ARGV: 1 jobs to take, 2 now, 3 queue name, 4 promotion limit, then finish
//       operations of this queue, five arguments each: op ('D' remove a finished
//       job, 'R' put it back at the head of the queue), its position in the
//       batch, entry, retry score ('' = none), retry member.
// A retry is scheduled only if its job was removed here (resending a batch
// whose reply was lost changes nothing). Returns {entries taken, delayed
// members promotion could not read, note, positions removed, positions kept
// (a key of the wrong type), queue length left}.
const Script& cluster_fetch_script() {
    static const Script script{std::string(promote_queue_lua) + R"lua(
local function is(k, want)
  local t = redis.call('TYPE', k)['ok']
  return t == 'none' or t == want, t
end
local ok1, t1 = is(KEYS[1], 'list')
if not ok1 then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t1 .. ', not a list') end
local delayed_ok = is(KEYS[2], 'zset')
local queue_ok, tq = is(KEYS[3], 'list')
local notes = {}
local removed, kept = {}, {}
for i = 5, #ARGV, 5 do
  local op, pos, e, score, member = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if op == 'D' then
    if score ~= '' and not delayed_ok then
      kept[#kept + 1] = pos
    elseif redis.call('LREM', KEYS[1], 1, e) == 1 then
      removed[#removed + 1] = pos
      if score ~= '' then redis.call('ZADD', KEYS[2], score, member) end
    end
  elseif not queue_ok then
    kept[#kept + 1] = pos
  elseif redis.call('LREM', KEYS[1], 1, e) == 1 then
    local nl = string.find(e, '\n', 1, true)
    redis.call('LPUSH', KEYS[3], string.sub(e, (nl or 0) + 1))
  end
end
if #kept > 0 then
  notes[#notes + 1] = #kept .. ' finished job(s) kept in ' .. KEYS[1] ..
    ' until ' .. KEYS[2] .. ' or ' .. KEYS[3] .. ' holds the right type'
end
local bad = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local _, b, note = promote_queue(KEYS[2], KEYS[3], ARGV[3], ARGV[2], limit)
  bad = b
  if note then notes[#notes + 1] = note end
end
local out = {}
local want = tonumber(ARGV[1])
if not queue_ok then
  notes[#notes + 1] = KEYS[3] .. ' holds a ' .. tq .. ', not a list: skipped'
  return {out, bad, table.concat(notes, '; '), removed, kept, 0}
end
if want > 0 then
  local items = redis.call('LRANGE', KEYS[3], 0, want - 1)
  if #items > 0 then
    redis.call('LTRIM', KEYS[3], #items, -1)
    for j = 1, #items do
      items[j] = ARGV[3] .. '\n' .. items[j]
      out[#out + 1] = items[j]
    end
    redis.call('RPUSH', KEYS[1], unpack(items))
  end
end
return {out, bad, table.concat(notes, '; '), removed, kept, redis.call('LLEN', KEYS[3])}
)lua"};
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

}  // namespace

// The steps, in this order, so that a crash between two of them duplicates a
// job rather than losing it:
//  1. failed-list entries and results of finished jobs (their own slots);
//  2. one script per queue (its slot): remove finished jobs from the processing
//     list (retries go to the queue's delayed set in the same call), put
//     requeued ones back, promote due jobs, and take jobs for the first queue;
//     then, while more are wanted, take from the next queues that hold jobs,
//     one call each, in priority order;
//  3. counters, death counts, heartbeat, registry, `retools:worker:<id>`.
std::string ReliableFetch::exchange_cluster(const FinishBatch& finished, std::size_t count, bool idle,
                                            const Beat* beat, std::vector<TakenJob>& out, FinishBatch* kept) {
    const double now = unix_now();
    if (now >= period_end_ || now < period_end_ - 3600) {
        periods_ = stat_periods(now);
        period_end_ = (std::floor(now / 3600) + 1) * 3600;
    }
    std::vector<std::string> notes;
    const std::vector<Group> groups = parse_groups(finished.args());
    std::vector<bool> skip(groups.size(), false);  // kept: its failed entry had nowhere to go

    // 1. What must exist before a finished job leaves its processing list.
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
    if (!first.empty()) {
        auto replies = conn_.execute(first);
        for (std::size_t i = 0; i < replies.size() && i < failed_at.size(); ++i)
            if (failed_at[i] < groups.size() && replies[i].is_error()) {
                skip[failed_at[i]] = true;
                if (kept) finished.copy_group(groups[failed_at[i]].at, *kept);
            }
        if (std::count(skip.begin(), skip.end(), true) > 0)
            notes.push_back(fmt::format("finished job(s) kept in the processing lists until {} is a list",
                                        queue_keys::failed));
    }

    // 2. Per queue: finish, promote, take. The worker's queues in priority
    // order, then any other queue a finished job came from.
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
    long long processed = 0, failed = 0;
    std::vector<std::string_view> removed_entries;
    std::vector<long long> left(names.size(), 0);
    std::string current_queue;  // of the first job taken, for `retools:worker:<id>`
    auto take = [&](const Reply& r, std::size_t q) {
        for (const Reply& e : r[0].as_array()) out.push_back(TakenJob::from_entry(std::string(e.view())));
        if (r[0].size() > 0 && current_queue.empty()) current_queue = names[q];
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
            ++processed;
            if (!grp->failed.empty()) ++failed;
            removed_entries.push_back(grp->entry);
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

    // 3. Bookkeeping in other slots: losing it in a crash loses no job.
    Pipeline third;
    add_counters(third, "processed", processed, periods_);
    add_counters(third, "failed", failed, periods_);
    for (std::string_view e : removed_entries) third.command("HDEL", queue_keys::recoveries, sha1_hex(e));
    std::size_t sadd_at = 0;
    if (beat) {
        third.command("SET", queue_keys::heartbeat(worker_id_), beat->json, "PX", beat->ttl_ms);
        third.command("ZADD", queue_keys::heartbeats, python_repr(now), worker_id_);
        sadd_at = third.size();
        third.command("SADD", queue_keys::workers, worker_id_);
    }
    if (out.size() > before) {
        const TakenJob& job = out[before];
        std::string payload(job.payload());
        if (!nlohmann::json::accept(payload)) payload = json_string(payload);
        third.command(
            "SET", queue_keys::worker(worker_id_),
            fmt::format("{{\"queue\": {}, \"run_at\": {}, \"payload\": {}}}",
                        json_string(queue_keys::queue(current_queue, true)), python_repr(now), payload));
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
    std::string note;
    for (const auto& n : notes) {
        if (!note.empty()) note += "; ";
        note += n;
    }
    return note;
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

QueueWaiter::QueueWaiter(const Connection& conn, const std::vector<std::string>& queues,
                         std::chrono::milliseconds block, std::function<void()> on_ready)
    : control_(conn), block_(std::max(block, std::chrono::milliseconds(10))), on_ready_(std::move(on_ready)) {
    // On a cluster a wait is sent again at least every second: a slot that
    // moved is then followed within that bound, and a CLIENT UNBLOCK that
    // reached the wrong node (the slot moved) delays the stop no longer.
    if (conn.is_cluster()) block_ = std::min(block_, std::chrono::milliseconds(1000));
    ConnectionOptions options = conn.options();
    options.pool_size = 1;
    for (const auto& q : queues)
        slots_.push_back(std::make_unique<Slot>(options, queue_keys::queue(q, conn.is_cluster())));
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
