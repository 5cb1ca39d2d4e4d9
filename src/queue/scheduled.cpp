// Scheduled jobs and retries: the sorted set retools:delayed (on a Redis
// Cluster one per queue, retools:delayed:{<queue>}, beside the queue).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>

#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "queue/json_limits.hpp"
#include "util/clock.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"
#include "util/clock.hpp"

namespace retools {

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
    if (options.unique_for.count() != 0 || !options.unique_key.empty())
        throw ConfigurationError(
            "enqueue_at and enqueue_in do not enqueue unique jobs (use enqueue or enqueue_many)");
    std::string queue, id;
    // A scheduled job is enqueued when it is due: that is its enqueued_at.
    std::string payload = impl_->build_payload(job_name, kwargs, options, queue, id, to_unix(when));
    Pipeline p;
    impl_->topology_.add_delayed(p, queue, to_unix(when), detail::delayed_member(queue, payload));
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

}  // namespace detail

std::size_t QueueManager::promote_due_jobs(system_clock::time_point now, std::size_t limit) const {
    if (limit == 0) return 0;
    return impl_->topology_.promote_due(impl_->conn_, to_unix(now), limit);
}

std::optional<system_clock::time_point> QueueManager::next_due_time() const {
    auto first = impl_->topology_.next_due(impl_->conn_);
    if (!first) return std::nullopt;
    return from_unix(*first);
}

std::vector<ScheduledJob> QueueManager::scheduled_jobs() const {
    std::vector<ScheduledJob> out;
    const std::vector<Reply> sets = impl_->topology_.scheduled_sets(impl_->conn_);
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
    return impl_->topology_.cancel_scheduled(impl_->conn_, job_id);
}

namespace detail {

system_clock::time_point add_retry_later(Pipeline& p, Job& job, std::chrono::duration<double> delay,
                                         const queue::Topology& topology) {
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
    topology.add_delayed(p, job.queue(), to_unix(due), member);
    return due;
}

}  // namespace detail

system_clock::time_point QueueManager::retry_later(Job& job, std::chrono::duration<double> delay) const {
    Pipeline p;
    auto due = detail::add_retry_later(p, job, delay, impl_->topology_);
    detail::check_replies(impl_->conn_.execute(p), p);
    return due;
}

}  // namespace retools
