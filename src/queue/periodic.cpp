// Periodic jobs: definitions in retools:periodic, next runs in
// retools:periodic:due (on a cluster one pair per queue, beside the queue).
#include "queue/periodic.hpp"

#include <algorithm>
#include <chrono>
#include <map>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "queue/cron.hpp"
#include "queue/keys.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"

namespace retools {

namespace detail {

namespace {

using std::chrono::system_clock;

double periodic_unix(system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

system_clock::time_point periodic_time(double seconds) {
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(std::chrono::duration<double>(seconds)));
}

// A score as sent to ZADD: the shortest text that reads back as the same double.
std::string score_text(double seconds) {
    return fmt::format("{}", seconds);
}

const Script& promote_script() {
    static const Script script{std::string(lua::queue_periodic_promote)};
    return script;
}

// One due run: where it is, what was read.
struct DueRun {
    std::string queue_set;  // the queue whose periodic keys hold it ("" on a single node)
    std::string id;
    std::string score;  // as Redis wrote it
};

}  // namespace

std::string periodic_payload(const nlohmann::json& definition, std::string_view id, double due, double now,
                             std::string_view job_id) {
    if (!definition.is_object() || !definition.contains("job") || !definition["job"].is_string() ||
        !definition.contains("queue") || !definition["queue"].is_string())
        throw QueueError(
            fmt::format("periodic job '{}': its definition is not an object with job and queue", id));
    nlohmann::json metadata = definition.value("metadata", nlohmann::json::object());
    if (!metadata.is_object()) metadata = nlohmann::json::object();
    metadata["enqueued_at"] = now;
    metadata["periodic_id"] = std::string(id);
    metadata["periodic_due"] = due;
    const nlohmann::json kwargs = definition.value("kwargs", nlohmann::json::object());
    const nlohmann::json events = definition.value("events", nlohmann::json::object());
    std::string out = "{\"job_id\": ";
    python_json_string(job_id, out, "job id");
    out.append(", \"job\": ");
    python_json_string(definition["job"].get_ref<const std::string&>(), out, "job name");
    out.append(", \"kwargs\": ");
    python_json_dump(kwargs.is_null() ? nlohmann::json::object() : kwargs, out, "kwargs");
    out.append(", \"events\": ");
    python_json_dump(events.is_null() ? nlohmann::json::object() : events, out, "events");
    out.append(", \"metadata\": ");
    python_json_dump(metadata, out, "metadata");
    out.append(", \"state\": {}}");
    return out;
}

PeriodicPromotion promote_periodic(const Connection& conn, const queue::Topology& topology, double now) {
    constexpr long long batch = 100;
    PeriodicPromotion result;
    const std::vector<std::string> sets = topology.periodic_queues(conn);
    Pipeline read;
    for (const auto& q : sets)
        read.command("ZRANGE", topology.periodic_due_key(q), 0, batch - 1, "WITHSCORES");
    if (read.empty()) return result;
    std::vector<DueRun> due;
    auto consider_next = [&](double t) {
        if (!result.next_run || t < *result.next_run) result.next_run = t;
    };
    const std::vector<Reply> ranges = conn.execute(read);
    for (std::size_t s = 0; s < ranges.size(); ++s) {
        const Reply& r = ranges[s];
        if (r.is_error()) {
            result.problems.emplace_back(r.error_message());
            continue;
        }
        for (std::size_t i = 0; i + 1 < r.size(); i += 2) {
            const double score = r[i + 1].as_double();
            if (score <= now)
                due.push_back({sets[s], r[i].as_string(), r[i + 1].as_string()});
            else
                consider_next(score);
        }
        if (r.size() == 2 * batch && r[r.size() - 1].as_double() <= now) consider_next(now);  // more wait
    }
    if (due.empty()) return result;

    Pipeline defs;
    for (const auto& d : due) defs.command("HGET", topology.periodic_key(d.queue_set), d.id);
    const std::vector<Reply> texts = conn.execute(defs);
    for (std::size_t i = 0; i < due.size(); ++i) {
        const DueRun& d = due[i];
        if (!texts[i].is_string()) continue;  // removed meanwhile (or a stray member): nothing to run
        const std::string text = texts[i].as_string();
        try {
            const nlohmann::json definition = nlohmann::json::parse(text);
            const CronSchedule schedule = CronSchedule::parse(definition.at("schedule").get<std::string>());
            const double next = periodic_unix(schedule.next_after(periodic_time(now)));
            const std::string& queue = definition.at("queue").get_ref<const std::string&>();
            validate_queue_name(queue);
            const std::string payload =
                periodic_payload(definition, d.id, std::stod(d.score), now, uuid4_hex());
            Reply r = promote_script()(conn,
                                       {topology.periodic_key(d.queue_set),
                                        topology.periodic_due_key(d.queue_set), topology.queue_key(queue)},
                                       d.id, d.score, text, score_text(next), payload);
            if (r.as_integer() == 1) ++result.enqueued;
            consider_next(next);
        } catch (const std::exception& e) {
            // The run waits (a queue key of the wrong type) or cannot be made
            // (a definition edited by hand): said, and looked at again later.
            result.problems.push_back(fmt::format("periodic job '{}': {}", d.id, e.what()));
        }
    }
    return result;
}

}  // namespace detail

namespace {

namespace keys = detail::queue_keys;

const Script& upsert_script() {
    static const Script script{std::string(detail::lua::queue_periodic_upsert)};
    return script;
}

}  // namespace

bool QueueManager::schedule_periodic(std::string_view id, std::string_view schedule,
                                     std::string_view job_name, const nlohmann::json& kwargs,
                                     const EnqueueOptions& options) const {
    if (id.empty()) throw ConfigurationError("schedule_periodic: the periodic job id is empty");
    if (options.unique_for.count() != 0 || !options.unique_key.empty())
        throw ConfigurationError(
            fmt::format("schedule_periodic '{}': unique options are not supported for periodic jobs", id));
    const detail::CronSchedule cron = detail::CronSchedule::parse(schedule);
    detail::validate_job_name(job_name);
    if (!kwargs.is_null() && !kwargs.is_object())
        throw QueueError(fmt::format("kwargs must be a JSON object, not a {}", kwargs.type_name()));
    if (!options.metadata.is_null() && !options.metadata.is_object())
        throw QueueError(
            fmt::format("metadata must be a JSON object, not a {}", options.metadata.type_name()));
    const std::string queue = impl_->resolve_queue(job_name, options.queue_name);
    nlohmann::json definition = {
        {"schedule", std::string(schedule)},
        {"job", std::string(job_name)},
        {"kwargs", kwargs.is_null() ? nlohmann::json::object() : kwargs},
        {"metadata", options.metadata.is_null() ? nlohmann::json::object() : options.metadata},
        {"queue", queue},
        {"events", nlohmann::json::parse(impl_->events_json(job_name))},
    };
    // Everything a run will write must be writable: checked now, not at 3 AM.
    detail::periodic_payload(definition, id, 0, 0, "check");
    const std::string text = definition.dump();
    const double next = detail::periodic_unix(cron.next_after(std::chrono::system_clock::now()));
    const auto& topology = impl_->topology_;
    // One id, one queue: on a cluster a definition moved to another queue
    // leaves its old one first.
    Pipeline p;
    for (const auto& q : topology.periodic_queues(impl_->conn_)) {
        if (q.empty() || q == queue) continue;
        p.command("HDEL", topology.periodic_key(q), id).command("ZREM", topology.periodic_due_key(q), id);
    }
    p.command("SADD", keys::queues, queue);
    detail::check_replies(impl_->conn_.execute(p), p);
    Reply r = upsert_script()(impl_->conn_, {topology.periodic_key(queue), topology.periodic_due_key(queue)},
                              id, text, detail::score_text(next));
    return r.as_integer() == 1;
}

bool QueueManager::remove_periodic(std::string_view id) const {
    const auto& topology = impl_->topology_;
    Pipeline p;
    for (const auto& q : topology.periodic_queues(impl_->conn_))
        p.command("HDEL", topology.periodic_key(q), id).command("ZREM", topology.periodic_due_key(q), id);
    if (p.empty()) return false;
    bool removed = false;
    const std::vector<Reply> replies = impl_->conn_.execute(p);
    for (std::size_t i = 0; i < replies.size(); i += 2) {
        replies[i].check();
        removed = removed || replies[i].as_integer() == 1;
    }
    return removed;
}

std::vector<PeriodicJob> QueueManager::periodic_jobs() const {
    const auto& topology = impl_->topology_;
    Pipeline p;
    for (const auto& q : topology.periodic_queues(impl_->conn_))
        p.command("HGETALL", topology.periodic_key(q))
            .command("ZRANGE", topology.periodic_due_key(q), 0, -1, "WITHSCORES");
    std::vector<PeriodicJob> out;
    if (p.empty()) return out;
    const std::vector<Reply> replies = impl_->conn_.execute(p);
    for (std::size_t s = 0; s + 1 < replies.size(); s += 2) {
        const Reply& defs = replies[s];
        const Reply& due = replies[s + 1];
        if (defs.is_error() || due.is_error()) continue;
        std::map<std::string, double, std::less<>> next;
        for (std::size_t i = 0; i + 1 < due.size(); i += 2) next[due[i].as_string()] = due[i + 1].as_double();
        for (std::size_t i = 0; i + 1 < defs.size(); i += 2) {
            try {
                const auto d = nlohmann::json::parse(defs[i + 1].view());
                PeriodicJob job;
                job.id = defs[i].as_string();
                job.schedule = d.at("schedule").get<std::string>();
                job.job_name = d.at("job").get<std::string>();
                job.kwargs = d.value("kwargs", nlohmann::json::object());
                job.queue = d.at("queue").get<std::string>();
                job.metadata = d.value("metadata", nlohmann::json::object());
                auto it = next.find(job.id);
                job.next_run = detail::periodic_time(it == next.end() ? 0.0 : it->second);
                out.push_back(std::move(job));
            } catch (const nlohmann::json::exception&) {
                // A definition edited by hand into something else: not listed.
            }
        }
    }
    std::stable_sort(out.begin(), out.end(), [](const PeriodicJob& a, const PeriodicJob& b) {
        return a.next_run < b.next_run || (a.next_run == b.next_run && a.id < b.id);
    });
    return out;
}

std::size_t QueueManager::promote_periodic_jobs(std::chrono::system_clock::time_point now) const {
    return detail::promote_periodic(impl_->conn_, impl_->topology_, detail::periodic_unix(now)).enqueued;
}

}  // namespace retools
