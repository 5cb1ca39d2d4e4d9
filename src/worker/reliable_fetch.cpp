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

#include <chrono>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/queue.hpp>

#include "core/clock.hpp"
#include "queue/keys.hpp"
#include "worker/internal.hpp"

namespace retools::detail {

namespace {

// KEYS: 1 processing list, 2 worker key, 3 failed list, 4 delayed set, 5.. queues in priority order
// ARGV: 1 jobs to take, 2 now (float seconds), 3 '1' when the worker will be idle, 4 worker id,
//       then finish operations:
//         D <entry>                  remove a finished job from the processing list
//         R <entry>                  remove it and put its payload back at the head of its queue
//         F <failed entry json>      append to the failed list          } only if the D just
//         S <key> <value> <ttl s>    store a result (a one-element      } before removed its
//                                    list, as QueueManager::store_result) } job: resending a
//         Z <score> <member>         schedule a retry in the delayed set } batch whose reply was
//                                    (as QueueManager::retry_later)      } lost changes nothing
// Due delayed jobs are promoted as QueueManager::promote_due_jobs does, in the same call.
// Returns the processing-list entries ("<queue>\n<payload>") taken.
// A script error keeps the writes made before it, so a key of the wrong type
// met half-way (say retools:failed after the LREM of a failed job) would lose
// the job. The keys this call will push to (and the queues it takes from, so
// that jobs already taken from a higher queue are not parked unseen) are
// therefore checked first: on a mismatch nothing is written and the error
// names the key; the worker keeps the batch and retries it until the key is
// fixed. Due jobs are pushed before
// they leave retools:delayed, and filed in retools:failed when their queue
// refuses them.
constexpr const char* fetch_source = R"lua(
local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want end
end
local bad = wrong_type(KEYS[1], 'list')
for k = 5, #KEYS do bad = bad or wrong_type(KEYS[k], 'list') end
local j = 5
while not bad and j <= #ARGV do
  local op = ARGV[j]
  if op == 'R' then
    local e = ARGV[j + 1]
    bad = wrong_type('retools:queue:' .. string.sub(e, 1, string.find(e, '\n', 1, true) - 1), 'list')
  elseif op == 'F' then
    bad = wrong_type(KEYS[3], 'list')
  elseif op == 'Z' then
    bad = wrong_type(KEYS[4], 'zset')
  end
  if op == 'S' then j = j + 4 elseif op == 'Z' then j = j + 3 else j = j + 2 end
end
if bad then return redis.error_reply(bad) end

local processing = KEYS[1]
local i, n = 5, #ARGV
local removed = false
while i <= n do
  local op = ARGV[i]
  if op == 'D' then
    removed = redis.call('LREM', processing, 1, ARGV[i + 1]) == 1
    i = i + 2
  elseif op == 'R' then
    local e = ARGV[i + 1]
    if redis.call('LREM', processing, 1, e) == 1 then
      local nl = string.find(e, '\n', 1, true)
      redis.call('LPUSH', 'retools:queue:' .. string.sub(e, 1, nl - 1), string.sub(e, nl + 1))
    end
    i = i + 2
  elseif op == 'F' then
    if removed then redis.call('RPUSH', KEYS[3], ARGV[i + 1]) end
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

local now = ARGV[2]
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
    redis.call('RPUSH', KEYS[3], cjson.encode({payload = payload, queue = queue, worker = ARGV[4],
      error = problem, failed_at = tonumber(now)}))
  end
  redis.call('ZREM', KEYS[4], m)
  if not problem then redis.call('SADD', 'retools:queues', d.queue) end
end

local want = tonumber(ARGV[1])
local out = {}
for k = 5, #KEYS do
  if want <= 0 then break end
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
return out
)lua";

const Script& fetch_script() {
    static const Script script{fetch_source};
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

void FinishBatch::requeue(const TakenJob& job) {
    args_.emplace_back("R");
    args_.push_back(job.entry);
}

// ---- ReliableFetch ----------------------------------------------------------------

ReliableFetch::ReliableFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues)
    : conn_(std::move(conn)), worker_id_(std::move(worker_id)) {
    keys_.push_back(queue_keys::processing(worker_id_));
    keys_.push_back(queue_keys::worker(worker_id_));
    keys_.emplace_back(queue_keys::failed);
    keys_.emplace_back(queue_keys::delayed);
    for (const auto& q : queues) keys_.push_back(queue_keys::queue(q));
}

void ReliableFetch::exchange(const FinishBatch& finished, std::size_t count, bool idle,
                             std::vector<TakenJob>& out) {
    Reply reply = fetch_script().run(conn_, keys_, count, python_repr(unix_now()), idle ? "1" : "0",
                                     worker_id_, finished.args());
    std::size_t n = reply.size();
    out.reserve(out.size() + n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(TakenJob::from_entry(std::string(reply[i].view())));
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
    ConnectionOptions options = conn.options();
    options.pool_size = 1;
    for (const auto& q : queues) slots_.push_back(std::make_unique<Slot>(options, queue_keys::queue(q)));
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
                    control_.command("CLIENT", "UNBLOCK", id);
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
            if (slot.client_id.load() < 0) slot.client_id = slot.conn.command("CLIENT", "ID").as_integer();
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
