// Scheduled jobs and retries: the sorted set retools:delayed (on a Redis
// Cluster one per queue, retools:delayed:{<queue>}, beside the queue).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "queue/json_limits.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"
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
    std::string payload = impl_->build_payload(job_name, kwargs, options, queue, id, to_unix(when));
    const bool cluster = impl_->conn_.is_cluster();
    Pipeline p;
    p.command("ZADD", keys::delayed(queue, cluster), to_unix(when), detail::delayed_member(queue, payload));
    // A cluster has one delayed set per queue: promoters find them through retools:queues.
    if (cluster) p.command("SADD", keys::queues, queue);
    detail::check_replies(impl_->conn_.execute(p), p);
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
    if (impl_->conn_.is_cluster()) {
        // One queue's delayed set at a time (src/queue/lua/promote_due_cluster.lua).
        static const Script promote_one{std::string(detail::lua::queue_promote_due_cluster)};
        std::size_t moved = 0;
        for (const auto& q : detail::delayed_queues(impl_->conn_)) {
            if (moved >= limit) break;
            Reply r = promote_one(impl_->conn_, {keys::delayed(q, true), keys::queue(q, true)}, to_unix(now),
                                  static_cast<long long>(limit - moved), q);
            moved += static_cast<std::size_t>(r[0].as_integer());
            if (r[1].size() > 0)
                detail::quarantine_delayed(impl_->conn_, q, r[1].as_array(), "", detail::unix_now());
        }
        return moved;
    }
    // Nothing leaves retools:delayed before it has landed elsewhere; a queue key
    // that will not take a job files it in retools:failed (src/queue/lua/promote_due.lua).
    static const Script promote_script{std::string(detail::lua::queue_promote_due)};
    Reply r = promote_script(impl_->conn_, {keys::delayed_all, keys::queues, keys::failed}, to_unix(now),
                             static_cast<long long>(limit), keys::queue_prefix, detail::unix_now());
    return static_cast<std::size_t>(r.as_integer());
}

std::optional<system_clock::time_point> QueueManager::next_due_time() const {
    if (impl_->conn_.is_cluster()) {
        Pipeline p;
        for (const auto& q : detail::delayed_queues(impl_->conn_))
            p.command("ZRANGE", keys::delayed(q, true), 0, 0, "WITHSCORES");
        std::optional<double> first;
        if (!p.empty())
            for (const Reply& r : impl_->conn_.execute(p))
                if (!r.is_error() && r.size() >= 2 && (!first || r[1].as_double() < *first))
                    first = r[1].as_double();
        if (!first) return std::nullopt;
        return from_unix(*first);
    }
    Reply r = impl_->conn_.command("ZRANGE", keys::delayed_all, 0, 0, "WITHSCORES");
    if (r.size() < 2) return std::nullopt;
    return from_unix(r[1].as_double());
}

std::vector<ScheduledJob> QueueManager::scheduled_jobs() const {
    std::vector<ScheduledJob> out;
    std::vector<Reply> sets;
    if (impl_->conn_.is_cluster()) {
        Pipeline p;
        for (const auto& q : detail::delayed_queues(impl_->conn_))
            p.command("ZRANGE", keys::delayed(q, true), 0, -1, "WITHSCORES");
        if (!p.empty()) sets = impl_->conn_.execute(p);
    } else {
        sets.push_back(impl_->conn_.command("ZRANGE", keys::delayed_all, 0, -1, "WITHSCORES"));
    }
    for (const Reply& r : sets) {
        if (r.is_error()) continue;
        for (std::size_t i = 0; i + 1 < r.size(); i += 2) {
            try {
                detail::check_json_depth(r[i].view(), "retools:delayed entry");
                auto entry = nlohmann::json::parse(r[i].view());
                out.push_back({Job::from_payload(entry.at("payload").get<std::string>(),
                                                 entry.at("queue").get<std::string>(), impl_->conn_),
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
    // src/queue/lua/cancel_scheduled.lua: 1 when removed.
    static const Script cancel_script{std::string(detail::lua::queue_cancel_scheduled)};
    if (impl_->conn_.is_cluster()) {
        for (const auto& q : detail::delayed_queues(impl_->conn_))
            if (cancel_script(impl_->conn_, {keys::delayed(q, true)}, job_id).as_integer() == 1) return true;
        return false;
    }
    return cancel_script(impl_->conn_, {keys::delayed_all}, job_id).as_integer() == 1;
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
    auto due = detail::add_retry_later(p, job, delay, impl_->conn_.is_cluster());
    detail::check_replies(impl_->conn_.execute(p), p);
    return due;
}

}  // namespace retools
