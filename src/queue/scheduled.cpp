// Scheduled jobs and retries: the sorted set retools:delayed (on a Redis
// Cluster one per queue, retools:delayed:{<queue>}, beside the queue).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "client/errors.hpp"
#include "queue/json_limits.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "util/clock.hpp"

namespace retools {

namespace keys = detail::queue_keys;
using std::chrono::system_clock;

namespace {

double to_unix(system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

system_clock::time_point from_unix(double seconds) {
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(std::chrono::duration<double>(seconds)));
}
}  // namespace

namespace detail {

std::string delayed_member(std::string_view queue, std::string_view payload) {
    std::string out = "{\"queue\": ";
    python_json_string(queue, out, "queue name");
    out.append(", \"payload\": ");
    python_json_string(payload, out, "job payload");
    out.push_back('}');
    return out;
}

}  // namespace detail

std::string QueueManager::enqueue_at(system_clock::time_point when, std::string_view job_name,
                                     const nlohmann::json& kwargs, const EnqueueOptions& options) const {
    std::string queue, id;
    // A scheduled job is enqueued when it is due: that is its enqueued_at.
    std::string payload = build_payload(job_name, kwargs, options, queue, id, to_unix(when));
    const bool cluster = conn_.is_cluster();
    Pipeline p;
    p.command("ZADD", keys::delayed(queue, cluster), to_unix(when), detail::delayed_member(queue, payload));
    // A cluster has one delayed set per queue: promoters find them through retools:queues.
    if (cluster) p.command("SADD", keys::queues, queue);
    detail::check_replies(conn_.execute(p), p);
    return id;
}

std::string QueueManager::enqueue_in(std::chrono::duration<double> delay, std::string_view job_name,
                                     const nlohmann::json& kwargs, const EnqueueOptions& options) const {
    if (!std::isfinite(delay.count()))
        throw ConfigurationError(fmt::format("enqueue_in delay {} s is not finite", delay.count()));
    return enqueue_at(system_clock::now() + std::chrono::duration_cast<system_clock::duration>(delay),
                      job_name, kwargs, options);
}

namespace detail {

void quarantine_delayed(const Connection& conn, std::string_view queue, const std::vector<Reply>& bad,
                        std::string_view worker_id, double now) {
    const std::string key = queue_keys::delayed(queue, true);
    for (const Reply& member : bad) {
        FailedJob f{member.as_string(), std::string(queue), fmt::format("malformed entry in {}", key),
                    std::string(worker_id), now};
        conn.command("RPUSH", queue_keys::failed, f.to_json()).check();
        conn.command("ZREM", key, member.view());
    }
}

namespace {

// Cluster: the scheduled jobs of every known queue, one sorted set each.
std::vector<std::string> delayed_queues(const Connection& conn) {
    std::vector<std::string> names;
    for (const auto& r : conn.command("SMEMBERS", queue_keys::queues).as_array())
        names.push_back(r.as_string());
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace
}  // namespace detail

std::size_t QueueManager::promote_due_jobs(system_clock::time_point now, std::size_t limit) const {
    if (limit == 0) return 0;
    if (conn_.is_cluster()) {
        // KEYS[1] = retools:delayed:{q}, KEYS[2] = retools:queue:{q} (one slot);
        // ARGV[1] = now, ARGV[2] = limit, ARGV[3] = q. Returns {moved, bad members, note}.
        static const Script promote_one{std::string(detail::promote_queue_lua) + R"lua(
local moved, bad, note = promote_queue(KEYS[1], KEYS[2], ARGV[3], ARGV[1], tonumber(ARGV[2]))
return {moved, bad, note or ''}
)lua"};
        std::size_t moved = 0;
        for (const auto& q : detail::delayed_queues(conn_)) {
            if (moved >= limit) break;
            Reply r = promote_one(conn_, {keys::delayed(q, true), keys::queue(q, true)}, to_unix(now),
                                  static_cast<long long>(limit - moved), q);
            moved += static_cast<std::size_t>(r[0].as_integer());
            if (r[1].size() > 0)
                detail::quarantine_delayed(conn_, q, r[1].as_array(), "", detail::unix_now());
        }
        return moved;
    }
    // KEYS[1] = retools:delayed, KEYS[2] = retools:queues, KEYS[3] = retools:failed;
    // ARGV[1] = now, ARGV[2] = limit, ARGV[3] = queue key prefix, ARGV[4] = failed_at.
    // Queue keys are derived from the entries (they cannot be known beforehand).
    // Nothing leaves retools:delayed before it has landed elsewhere: a key of the
    // wrong type must not turn a script error (which keeps earlier writes) into a
    // lost job. Tracking keys are checked up front; a queue key that will not take
    // the job files it, intact, in retools:failed with the reason.
    // (retools:queues is only an index: it is written last.)
    static const Script promote_script{std::string(detail::failed_entry_lua) + R"lua(
for _, check in ipairs({{KEYS[1], 'zset'}, {KEYS[3], 'list'}}) do
  local t = redis.call('TYPE', check[1])['ok']
  if t ~= 'none' and t ~= check[2] then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. t .. ', not a ' .. check[2])
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  local ok, entry = pcall(cjson.decode, member)
  local problem, payload, queue = 'malformed entry in retools:delayed', member, ''
  if ok and type(entry) == 'table' and type(entry.queue) == 'string' and type(entry.payload) == 'string'
     and entry.queue ~= '' and not string.find(entry.queue, '[:,]') then
    local pushed = redis.pcall('RPUSH', ARGV[3] .. entry.queue, entry.payload)
    if type(pushed) == 'table' and pushed.err then
      problem, payload, queue = ARGV[3] .. entry.queue .. ' refused the job: ' .. pushed.err, entry.payload, entry.queue
    else
      problem = nil
      moved = moved + 1
    end
  end
  if problem then
    redis.call('RPUSH', KEYS[3], failed_entry(payload, queue, '', problem, tonumber(ARGV[4])))
  end
  redis.call('ZREM', KEYS[1], member)
  if not problem then redis.call('SADD', KEYS[2], entry.queue) end
end
return moved
)lua"};
    Reply r = promote_script(conn_, {keys::delayed_all, keys::queues, keys::failed}, to_unix(now),
                             static_cast<long long>(limit), keys::queue_prefix, detail::unix_now());
    return static_cast<std::size_t>(r.as_integer());
}

std::optional<system_clock::time_point> QueueManager::next_due_time() const {
    if (conn_.is_cluster()) {
        Pipeline p;
        for (const auto& q : detail::delayed_queues(conn_))
            p.command("ZRANGE", keys::delayed(q, true), 0, 0, "WITHSCORES");
        std::optional<double> first;
        if (!p.empty())
            for (const Reply& r : conn_.execute(p))
                if (!r.is_error() && r.size() >= 2 && (!first || r[1].as_double() < *first))
                    first = r[1].as_double();
        if (!first) return std::nullopt;
        return from_unix(*first);
    }
    Reply r = conn_.command("ZRANGE", keys::delayed_all, 0, 0, "WITHSCORES");
    if (r.size() < 2) return std::nullopt;
    return from_unix(r[1].as_double());
}

std::vector<ScheduledJob> QueueManager::scheduled_jobs() const {
    std::vector<ScheduledJob> out;
    std::vector<Reply> sets;
    if (conn_.is_cluster()) {
        Pipeline p;
        for (const auto& q : detail::delayed_queues(conn_))
            p.command("ZRANGE", keys::delayed(q, true), 0, -1, "WITHSCORES");
        if (!p.empty()) sets = conn_.execute(p);
    } else {
        sets.push_back(conn_.command("ZRANGE", keys::delayed_all, 0, -1, "WITHSCORES"));
    }
    for (const Reply& r : sets) {
        if (r.is_error()) continue;
        for (std::size_t i = 0; i + 1 < r.size(); i += 2) {
            try {
                detail::check_json_depth(r[i].view(), "retools:delayed entry");
                auto entry = nlohmann::json::parse(r[i].view());
                out.push_back({Job::from_payload(entry.at("payload").get<std::string>(),
                                                 entry.at("queue").get<std::string>(), conn_),
                               from_unix(r[i + 1].as_double())});
            } catch (const nlohmann::json::exception&) {
            } catch (const QueueError&) {}
        }
    }
    if (sets.size() > 1)
        std::stable_sort(out.begin(), out.end(),
                         [](const ScheduledJob& a, const ScheduledJob& b) { return a.due < b.due; });
    return out;
}

bool QueueManager::cancel_scheduled(std::string_view job_id) const {
    // KEYS[1] = retools:delayed; ARGV[1] = job id. Returns 1 when removed.
    static const Script cancel_script{R"lua(
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, entry = pcall(cjson.decode, member)
  if ok and type(entry) == 'table' and type(entry.payload) == 'string' then
    local ok2, job = pcall(cjson.decode, entry.payload)
    if ok2 and type(job) == 'table' and job.job_id == ARGV[1] then
      redis.call('ZREM', KEYS[1], member)
      return 1
    end
  end
end
return 0
)lua"};
    if (conn_.is_cluster()) {
        for (const auto& q : detail::delayed_queues(conn_))
            if (cancel_script(conn_, {keys::delayed(q, true)}, job_id).as_integer() == 1) return true;
        return false;
    }
    return cancel_script(conn_, {keys::delayed_all}, job_id).as_integer() == 1;
}

namespace detail {

system_clock::time_point add_retry_later(Pipeline& p, Job& job, std::chrono::duration<double> delay,
                                         bool cluster) {
    if (!std::isfinite(delay.count()) || delay.count() < 0)
        throw ConfigurationError(fmt::format("retry delay {} s is not a non-negative number", delay.count()));
    validate_queue_name(job.queue());
    int done = job.retries_done();
    job.state()["retried"] = done + 1;
    std::string member;
    try {
        member = delayed_member(job.queue(), job.to_json());
    } catch (...) {
        job.state()["retried"] = done;  // unchanged when nothing was scheduled
        throw;
    }
    auto due = system_clock::now() + std::chrono::duration_cast<system_clock::duration>(delay);
    p.command("ZADD", keys::delayed(job.queue(), cluster), to_unix(due), member);
    if (cluster) p.command("SADD", keys::queues, job.queue());
    return due;
}

}  // namespace detail

system_clock::time_point QueueManager::retry_later(Job& job, std::chrono::duration<double> delay) const {
    Pipeline p;
    auto due = detail::add_retry_later(p, job, delay, conn_.is_cluster());
    detail::check_replies(conn_.execute(p), p);
    return due;
}

}  // namespace retools
