#include <retools/queue.hpp>

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/detail/queue_keys.hpp>

namespace retools {

namespace keys = detail::queue_keys;

namespace {

constexpr std::string_view known_events[] = {"job_prerun", "job_wrapper", "job_postrun", "job_failure"};

void validate_event(std::string_view event, std::string_view handler) {
    if (std::find(std::begin(known_events), std::end(known_events), event) == std::end(known_events))
        throw ConfigurationError(fmt::format(
            "unknown event '{}' (expected job_prerun, job_wrapper, job_postrun or job_failure)", event));
    if (handler.empty()) throw ConfigurationError(fmt::format("empty handler name for event '{}'", event));
}

void check_object(const nlohmann::json& value, std::string_view what) {
    if (!value.is_null() && !value.is_object())
        throw QueueError(fmt::format("{} must be a JSON object, not a {}", what, value.type_name()));
}

// The payload parts every job of one enqueue call shares, serialized once:
// `{"job_id": "` | id | `", "job": <name>, "kwargs": ` | kwargs | tail.
struct PayloadTemplate {
    std::string head_after_id;  // `", "job": "<name>", "kwargs": `
    std::string tail;           // `, "events": {...}, "metadata": {...}, "state": {}}`

    PayloadTemplate(std::string_view job_name, const std::string& events, const nlohmann::json& metadata) {
        head_after_id = "\", \"job\": ";
        detail::python_json_string(job_name, head_after_id, "job name");
        head_after_id.append(", \"kwargs\": ");
        tail = ", \"events\": ";
        tail.append(events);
        tail.append(", \"metadata\": ");
        if (metadata.is_null())
            tail.append("{}");
        else
            detail::python_json_dump(metadata, tail, "metadata");
        tail.append(", \"state\": {}}");
    }

    void write(std::string& out, std::string_view id, const nlohmann::json& kwargs) const {
        out.append("{\"job_id\": \"");
        out.append(id);  // uuid4 hex: nothing to escape
        out.append(head_after_id);
        if (kwargs.is_null())
            out.append("{}");
        else
            detail::python_json_dump(kwargs, out, "kwargs");
        out.append(tail);
    }
};

}  // namespace

QueueManager::QueueManager() : QueueManager(global_connection()) {}

QueueManager::QueueManager(Connection conn, std::string default_queue_name)
    : conn_(std::move(conn)), default_queue_(std::move(default_queue_name)) {
    detail::validate_queue_name(default_queue_);
}

void QueueManager::set_queue_for_job(std::string job_name, std::string queue_name) {
    detail::validate_job_name(job_name);
    detail::validate_queue_name(queue_name);
    job_queues_[std::move(job_name)] = std::move(queue_name);
}

void QueueManager::subscriber(std::string event, std::string handler) {
    validate_event(event, handler);
    global_events_[std::move(event)].push_back(std::move(handler));
}

void QueueManager::subscriber(std::string event, std::string job_name, std::string handler) {
    validate_event(event, handler);
    detail::validate_job_name(job_name);
    job_events_[std::move(job_name)][std::move(event)].push_back(std::move(handler));
}

std::string QueueManager::resolve_queue(std::string_view job_name, std::string_view requested) const {
    if (!requested.empty()) {
        detail::validate_queue_name(requested);
        return std::string(requested);
    }
    auto it = job_queues_.find(job_name);
    return it != job_queues_.end() ? it->second : default_queue_;
}

std::string QueueManager::events_json(std::string_view job_name) const {
    // Global handlers first, then the job's own, without touching either map
    // (the original's shallow copy made per-job handlers leak into the globals).
    nlohmann::json events = nlohmann::json::object();
    for (const auto& [event, handlers] : global_events_) events[event] = handlers;
    if (auto it = job_events_.find(job_name); it != job_events_.end())
        for (const auto& [event, handlers] : it->second) {
            auto& list = events[event];
            if (list.is_null()) list = nlohmann::json::array();
            for (const auto& h : handlers) list.push_back(h);
        }
    std::string out;
    detail::python_json_dump(events, out, "events");
    return out;
}

std::string QueueManager::make_payload(std::string_view job_id, std::string_view job_name,
                                       const nlohmann::json& kwargs, const nlohmann::json& metadata) const {
    detail::validate_job_name(job_name);
    check_object(kwargs, "kwargs");
    check_object(metadata, "metadata");
    PayloadTemplate t{job_name, events_json(job_name), metadata};
    std::string out = "{\"job_id\": ";
    detail::python_json_string(job_id, out, "job id");
    // The template starts with the closing quote of a bare hex id; the id here is quoted already.
    out.append(std::string_view(t.head_after_id).substr(1));
    if (kwargs.is_null())
        out.append("{}");
    else
        detail::python_json_dump(kwargs, out, "kwargs");
    out.append(t.tail);
    return out;
}

std::string QueueManager::build_payload(std::string_view job_name, const nlohmann::json& kwargs,
                                        const EnqueueOptions& options, std::string& queue,
                                        std::string& id) const {
    detail::validate_job_name(job_name);
    check_object(kwargs, "kwargs");
    check_object(options.metadata, "metadata");
    queue = resolve_queue(job_name, options.queue_name);
    PayloadTemplate t{job_name, events_json(job_name), options.metadata};
    id = detail::uuid4_hex();
    std::string payload;
    t.write(payload, id, kwargs);
    return payload;
}

std::string QueueManager::enqueue(std::string_view job_name, const nlohmann::json& kwargs,
                                  const EnqueueOptions& options) const {
    std::string queue, id;
    std::string payload = build_payload(job_name, kwargs, options, queue, id);
    Pipeline p;
    p.command("RPUSH", keys::queue(queue), payload);
    p.command("SADD", keys::queues, queue);
    detail::check_replies(conn_.execute(p), p);
    return id;
}

std::vector<std::string> QueueManager::enqueue_batch(std::span<const JobSpec> jobs) const {
    // Validate and serialize everything first: a bad job sends nothing.
    std::vector<std::string> ids(jobs.size()), queues(jobs.size()), payloads(jobs.size());
    std::map<std::string, std::string, std::less<>> events_cache;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& spec = jobs[i];
        try {
            detail::validate_job_name(spec.job_name);
            check_object(spec.kwargs, "kwargs");
            check_object(spec.options.metadata, "metadata");
            queues[i] = resolve_queue(spec.job_name, spec.options.queue_name);
        } catch (const ConfigurationError& e) {
            throw ConfigurationError(fmt::format("job #{}: {}", i, e.what()));
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("job #{}: {}", i, e.what()));
        }
        auto ev = events_cache.find(spec.job_name);
        if (ev == events_cache.end()) ev = events_cache.emplace(spec.job_name, events_json(spec.job_name)).first;
        ids[i] = detail::uuid4_hex();
        try {
            PayloadTemplate t{spec.job_name, ev->second, spec.options.metadata};
            t.write(payloads[i], ids[i], spec.kwargs);
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("job #{}: {}", i, e.what()));
        }
    }
    if (jobs.empty()) return ids;
    // Runs of consecutive jobs for the same queue share one RPUSH.
    Pipeline p;
    std::vector<std::string_view> run;
    std::set<std::string_view> names;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        run.push_back(payloads[i]);
        names.insert(queues[i]);
        if (i + 1 == jobs.size() || queues[i + 1] != queues[i]) {
            p.command("RPUSH", keys::queue(queues[i]), run);
            run.clear();
        }
    }
    p.command("SADD", keys::queues, names);
    detail::check_replies(conn_.execute(p), p);
    return ids;
}

std::vector<std::string> QueueManager::enqueue_many(std::string_view job_name,
                                                    std::span<const nlohmann::json> kwargs_list,
                                                    const EnqueueOptions& options) const {
    detail::validate_job_name(job_name);
    check_object(options.metadata, "metadata");
    for (std::size_t i = 0; i < kwargs_list.size(); ++i)
        if (!kwargs_list[i].is_null() && !kwargs_list[i].is_object())
            throw QueueError(fmt::format("kwargs #{} must be a JSON object, not a {}", i,
                                         kwargs_list[i].type_name()));
    std::vector<std::string> ids;
    if (kwargs_list.empty()) return ids;
    std::string queue = resolve_queue(job_name, options.queue_name);
    PayloadTemplate t{job_name, events_json(job_name), options.metadata};

    // All payloads go into one arena; the RPUSH arguments are views into it.
    ids.reserve(kwargs_list.size());
    std::string arena;
    std::vector<std::size_t> ends;
    ends.reserve(kwargs_list.size());
    for (const auto& kwargs : kwargs_list) {
        ids.push_back(detail::uuid4_hex());
        t.write(arena, ids.back(), kwargs);
        ends.push_back(arena.size());
    }
    std::vector<std::string_view> payloads;
    payloads.reserve(ends.size());
    std::size_t begin = 0;
    for (std::size_t end : ends) {
        payloads.emplace_back(arena.data() + begin, end - begin);
        begin = end;
    }

    // Several RPUSHes of bounded size (one huge command would stall the
    // server for its whole length), all in one round trip.
    constexpr std::size_t chunk = 10000;
    Pipeline p;
    p.reserve(arena.size() + payloads.size() * 16 + 256);
    std::string key = keys::queue(queue);
    for (std::size_t at = 0; at < payloads.size(); at += chunk) {
        std::span<const std::string_view> part{payloads.data() + at,
                                               std::min(chunk, payloads.size() - at)};
        p.command("RPUSH", key, part);
    }
    p.command("SADD", keys::queues, queue);
    detail::check_replies(conn_.execute(p), p);
    return ids;
}

Job QueueManager::get_job(std::string_view job_id, std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    auto entries = conn_.command("LRANGE", keys::queue(queue), 0, -1).as_array();
    bool plain_id = std::all_of(job_id.begin(), job_id.end(), [](char c) {
        return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/';
    });
    for (const auto& entry : entries) {
        // Cheap pre-check: skip entries whose text cannot hold this id (only
        // for ids JSON writes unescaped).
        if (plain_id && entry.view().find(job_id) == std::string_view::npos) continue;
        try {
            Job job = Job::from_payload(entry.view(), queue, conn_);
            if (job.id() == job_id) return job;
        } catch (const QueueError&) {
            // A malformed entry is not the job asked for; the worker files it as failed.
        }
    }
    throw QueueError(fmt::format("no job '{}' in queue '{}'", job_id, queue));
}

std::vector<Job> QueueManager::get_jobs(std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    auto entries = conn_.command("LRANGE", keys::queue(queue), 0, -1).as_array();
    std::vector<Job> jobs;
    jobs.reserve(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
        try {
            jobs.push_back(Job::from_payload(entries[i].view(), queue, conn_));
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("queue '{}' entry {}: {}", queue, i, e.what()));
        }
    }
    return jobs;
}

std::size_t QueueManager::queue_length(std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    return static_cast<std::size_t>(conn_.command("LLEN", keys::queue(queue)).as_integer());
}

std::vector<std::string> QueueManager::queue_names() const {
    std::vector<std::string> names;
    for (const auto& r : conn_.command("SMEMBERS", keys::queues).as_array()) names.push_back(r.as_string());
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace retools
