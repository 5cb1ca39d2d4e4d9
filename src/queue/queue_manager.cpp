#include <algorithm>
#include <set>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "client/connection_access.hpp"
#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "queue/indexed_range.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"
#include "queue/test_hooks.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"

namespace retools {

namespace keys = detail::queue_keys;
using namespace std::string_view_literals;

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

// Per-thread buffers of the enqueue hot paths, reused so that a steady stream
// of enqueues allocates (and page-faults) nothing for its payloads and
// commands. Oversized ones are dropped after use.
struct Scratch {
    Pipeline pipeline;
    std::string payload;
    std::string metadata;

    static Scratch& get() {
        thread_local Scratch scratch;
        scratch.pipeline.clear();
        return scratch;
    }
    void trim() {
        constexpr std::size_t keep = std::size_t{16} << 20;
        if (detail::ConnectionAccess::buffer(pipeline).data().capacity() > keep) pipeline = Pipeline{};
        if (payload.capacity() > keep) payload = std::string{};
    }
};

// The queue a job goes to and its list key: the job's planned queue, unless
// the enqueue options name another. Not copyable: `key` may point into
// `requested_key`.
struct Destination {
    Destination(std::string_view planned_queue, std::string_view planned_key, const std::string& requested,
                const detail::queue::Topology& topology)
        : queue(planned_queue), key(planned_key) {
        if (requested.empty()) return;
        detail::validate_queue_name(requested);
        queue = requested;
        requested_key = topology.queue_key(requested);
        key = requested_key;
    }
    Destination(const Destination&) = delete;
    Destination& operator=(const Destination&) = delete;

    std::string_view queue, key;
    std::string requested_key;
};

}  // namespace

QueueManager::QueueManager() : QueueManager(global_connection()) {}

QueueManager::QueueManager(Connection conn, std::string default_queue_name) {
    detail::validate_queue_name(default_queue_name);
    impl_ = std::make_unique<Impl>(std::move(conn), std::move(default_queue_name));
}

QueueManager::QueueManager(const QueueManager& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}

QueueManager& QueueManager::operator=(const QueueManager& other) {
    if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
    return *this;
}

QueueManager::QueueManager(QueueManager&& other) noexcept = default;
QueueManager& QueueManager::operator=(QueueManager&& other) noexcept = default;
QueueManager::~QueueManager() = default;

const Connection& QueueManager::connection() const noexcept {
    return impl_->conn_;
}

const std::string& QueueManager::default_queue_name() const noexcept {
    return impl_->default_queue_;
}

void QueueManager::set_queue_for_job(std::string job_name, std::string queue_name) {
    detail::validate_job_name(job_name);
    detail::validate_queue_name(queue_name);
    impl_->job_queues_[std::move(job_name)] = std::move(queue_name);
    impl_->clear_plans();
}

void QueueManager::subscriber(std::string event, std::string handler) {
    validate_event(event, handler);
    impl_->global_events_[std::move(event)].push_back(std::move(handler));
    impl_->clear_plans();
}

void QueueManager::subscriber(std::string event, std::string job_name, std::string handler) {
    validate_event(event, handler);
    detail::validate_job_name(job_name);
    impl_->job_events_[std::move(job_name)][std::move(event)].push_back(std::move(handler));
    impl_->clear_plans();
}

std::string QueueManager::Impl::resolve_queue(std::string_view job_name, std::string_view requested) const {
    if (!requested.empty()) {
        detail::validate_queue_name(requested);
        return std::string(requested);
    }
    auto it = job_queues_.find(job_name);
    return it != job_queues_.end() ? it->second : default_queue_;
}

std::string QueueManager::Impl::events_json(std::string_view job_name) const {
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

std::string detail::make_payload(const QueueManager& qm, std::string_view job_id, std::string_view job_name,
                                 const nlohmann::json& kwargs, const nlohmann::json& metadata) {
    detail::validate_job_name(job_name);
    check_object(kwargs, "kwargs");
    check_object(metadata, "metadata");
    PayloadTemplate t{job_name, QueueManagerAccess::impl(qm).events_json(job_name), metadata};
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

const QueueManager::Impl::JobPlan& QueueManager::Impl::plan_for(
    std::string_view job_name, std::unique_ptr<const Impl::JobPlan>& uncached) const {
    // Bounded, in case job names are generated: past the bound, plans are built per call.
    constexpr std::size_t max_plans = 1024;
    {
        std::lock_guard lock(plans_mutex_);
        if (auto it = plans_.find(job_name); it != plans_.end()) return *it->second;
    }
    detail::validate_job_name(job_name);
    auto plan = std::make_unique<Impl::JobPlan>();
    plan->queue = resolve_queue(job_name, {});
    plan->queue_key = topology_.queue_key(plan->queue);
    plan->head = "\", \"job\": ";
    detail::python_json_string(job_name, plan->head, "job name");
    plan->head.append(", \"kwargs\": ");
    plan->events = ", \"events\": ";
    plan->events.append(events_json(job_name));
    plan->events.append(", \"metadata\": ");
    std::lock_guard lock(plans_mutex_);
    if (auto it = plans_.find(job_name); it != plans_.end()) return *it->second;
    if (plans_.size() >= max_plans) {
        uncached = std::move(plan);
        return *uncached;
    }
    return *plans_.emplace(std::string(job_name), std::move(plan)).first->second;
}

namespace {

// The payload's metadata text: `metadata` with `enqueued_at` (Unix seconds) added
// when it has none, for the CLI/dashboard's queue latency. Python retools reads
// metadata as an opaque dict, so this changes nothing for it. Keys in
// nlohmann's (sorted) order, as Job::to_json writes them.
void append_metadata(std::string& out, const nlohmann::json& metadata, double now) {
    if (metadata.is_null() || metadata.empty()) {
        out.append(R"({"enqueued_at": )"sv);
        detail::append_python_repr(out, now);
        out.push_back('}');
    } else if (metadata.contains("enqueued_at")) {
        detail::python_json_dump(metadata, out, "metadata");
    } else {
        nlohmann::json with = metadata;
        with["enqueued_at"] = now;
        detail::python_json_dump(with, out, "metadata");
    }
}

std::string metadata_text(const nlohmann::json& metadata, double now) {
    std::string out;
    append_metadata(out, metadata, now);
    return out;
}

void write_payload(std::string& out, const auto& plan, std::string_view id, const nlohmann::json& kwargs,
                   std::string_view metadata) {
    out.append(R"({"job_id": ")"sv);
    out.append(id);  // uuid4 hex: nothing to escape
    out.append(plan.head);
    if (kwargs.is_null())
        out.append("{}"sv);
    else
        detail::python_json_dump(kwargs, out, "kwargs");
    out.append(plan.events);
    out.append(metadata);
    out.append(R"(, "state": {}})"sv);
}

// ---- unique jobs -------------------------------------------------------------

// The claim name of a unique job: the caller's, else the job name and the
// kwargs as canonical JSON (nlohmann writes object keys sorted).
std::string unique_name(std::string_view job_name, const nlohmann::json& kwargs,
                        const EnqueueOptions& options) {
    if (!options.unique_key.empty()) return options.unique_key;
    std::string out(job_name);
    out.push_back(' ');
    try {
        out.append(kwargs.is_null() ? std::string("{}") : kwargs.dump());
    } catch (const nlohmann::json::exception& e) {
        throw QueueError(fmt::format("kwargs cannot make a unique key: {}", e.what()));
    }
    return out;
}

void check_unique_options(const EnqueueOptions& options, std::string_view call) {
    if (options.unique_for.count() < 0)
        throw ConfigurationError(fmt::format("{}: EnqueueOptions::unique_for must not be negative, got {} ms",
                                             call, options.unique_for.count()));
    if (options.unique_for.count() == 0 && !options.unique_key.empty())
        throw ConfigurationError(
            fmt::format("{}: EnqueueOptions::unique_key '{}' needs unique_for", call, options.unique_key));
}

const Script& unique_script() {
    static const Script script{std::string(detail::lua::queue_unique_enqueue)};
    return script;
}

// One unique job (src/queue/lua/unique_enqueue.lua), built in the reused
// buffers of a plain enqueue: one round trip of EVALSHA and SADD. Returns its
// id, or that of the job holding its claim.
std::string enqueue_one_unique(const Connection& conn, const detail::queue::Topology& topology,
                               const auto& plan, std::string_view job_name, std::string_view queue,
                               std::string_view queue_key, const nlohmann::json& kwargs,
                               const EnqueueOptions& options) {
    const Script& script = unique_script();
    const std::string claim = topology.unique_key(queue, unique_name(job_name, kwargs, options));
    const std::string_view until = options.unique_until == UniqueUntil::end ? "end"sv : "start"sv;
    Scratch& s = Scratch::get();
    s.metadata.clear();
    if (options.metadata.is_null() || options.metadata.empty()) {
        // The keys in sorted order, as nlohmann writes them.
        s.metadata.append(R"({"enqueued_at": )"sv);
        detail::append_python_repr(s.metadata, detail::unix_now());
        s.metadata.append(R"(, "unique_claim": )"sv);
        detail::python_json_string(claim, s.metadata, "unique key");
        s.metadata.append(R"(, "unique_until": ")"sv).append(until).append("\"}"sv);
    } else {
        nlohmann::json metadata = options.metadata;
        metadata["unique_claim"] = claim;
        metadata["unique_until"] = until;
        append_metadata(s.metadata, metadata, detail::unix_now());
    }
    std::string id = detail::uuid4_hex();
    s.payload.clear();
    write_payload(s.payload, plan, id, kwargs, s.metadata);
    const std::string ttl = std::to_string(options.unique_for.count());
    s.pipeline.command("EVALSHA", script.sha(), 2, queue_key, claim, ttl, id, s.payload);
    s.pipeline.command("SADD", keys::queues, queue);
    std::vector<Reply> replies = conn.execute(s.pipeline);
    if (replies[0].is_error() && replies[0].error_message().starts_with("NOSCRIPT"))
        replies[0] = script(conn, {queue_key, claim}, ttl, id, s.payload);
    replies[0].check();
    replies[1].check();
    std::string held = replies[0][0].as_string();
    s.trim();
    return held;
}

// Enqueues `kwargs_list` as unique jobs on `queue` (src/queue/lua/unique_enqueue.lua):
// one script per 1,000 distinct claims, all in one round trip. Jobs of one
// call with the same claim share the first one's id.
std::vector<std::string> enqueue_unique(const Connection& conn, const detail::queue::Topology& topology,
                                        const auto& plan, std::string_view job_name, std::string_view queue,
                                        std::string_view queue_key,
                                        std::span<const nlohmann::json> kwargs_list,
                                        const EnqueueOptions& options) {
    const Script& script = unique_script();
    const double now = detail::unix_now();
    nlohmann::json metadata = options.metadata.is_null() ? nlohmann::json::object() : options.metadata;
    metadata["unique_until"] = options.unique_until == UniqueUntil::end ? "end" : "start";
    std::map<std::string, std::size_t, std::less<>> first_of;  // claim key → its job's index in `calls`
    std::vector<std::size_t> job_of(kwargs_list.size());
    std::vector<std::string> claims, args;  // per distinct claim; ids and payloads
    for (std::size_t i = 0; i < kwargs_list.size(); ++i) {
        std::string claim = topology.unique_key(queue, unique_name(job_name, kwargs_list[i], options));
        auto [it, added] = first_of.emplace(claim, claims.size());
        job_of[i] = it->second;
        if (!added) continue;
        metadata["unique_claim"] = claim;
        std::string id = detail::uuid4_hex(), payload;
        write_payload(payload, plan, id, kwargs_list[i], metadata_text(metadata, now));
        claims.push_back(std::move(claim));
        args.push_back(std::move(id));
        args.push_back(std::move(payload));
    }
    constexpr std::size_t chunk = 1000;
    const std::string ttl = std::to_string(options.unique_for.count());
    Pipeline p;
    auto chunk_keys = [&](std::size_t at, std::size_t end) {
        std::vector<std::string_view> k{queue_key};
        for (std::size_t c = at; c < end; ++c) k.push_back(claims[c]);
        return k;
    };
    auto chunk_args = [&](std::size_t at, std::size_t end) {
        std::vector<std::string_view> a{ttl};
        for (std::size_t c = 2 * at; c < 2 * end; ++c) a.push_back(args[c]);
        return a;
    };
    for (std::size_t at = 0; at < claims.size(); at += chunk) {
        const std::size_t end = std::min(at + chunk, claims.size());
        p.command("EVALSHA", script.sha(), end - at + 1, chunk_keys(at, end), chunk_args(at, end));
    }
    p.command("SADD", detail::queue_keys::queues, queue);
    std::vector<Reply> replies = conn.execute(p);
    std::vector<std::string> held;  // the id each distinct claim ended with
    for (std::size_t at = 0, r = 0; at < claims.size(); at += chunk, ++r) {
        const std::size_t end = std::min(at + chunk, claims.size());
        if (replies[r].is_error() && replies[r].error_message().starts_with("NOSCRIPT"))
            replies[r] = script.run(conn, chunk_keys(at, end), chunk_args(at, end));
        replies[r].check();
        for (const Reply& id : replies[r].as_array()) held.push_back(id.as_string());
    }
    replies.back().check();
    std::vector<std::string> ids;
    ids.reserve(kwargs_list.size());
    for (std::size_t i = 0; i < kwargs_list.size(); ++i) ids.push_back(held.at(job_of[i]));
    return ids;
}

}  // namespace

std::string QueueManager::Impl::build_payload(std::string_view job_name, const nlohmann::json& kwargs,
                                              const EnqueueOptions& options, std::string& queue,
                                              std::string& id, double enqueued_at) const {
    std::unique_ptr<const Impl::JobPlan> uncached;
    const Impl::JobPlan& plan = plan_for(job_name, uncached);
    check_object(kwargs, "kwargs");
    check_object(options.metadata, "metadata");
    if (options.queue_name.empty()) {
        queue = plan.queue;
    } else {
        detail::validate_queue_name(options.queue_name);
        queue = options.queue_name;
    }
    id = detail::uuid4_hex();
    std::string payload;
    write_payload(payload, plan, id, kwargs, metadata_text(options.metadata, enqueued_at));
    return payload;
}

std::string QueueManager::enqueue(std::string_view job_name, const nlohmann::json& kwargs,
                                  const EnqueueOptions& options) const {
    std::unique_ptr<const Impl::JobPlan> uncached;
    const Impl::JobPlan& plan = impl_->plan_for(job_name, uncached);
    check_object(kwargs, "kwargs");
    check_object(options.metadata, "metadata");
    const Destination to{plan.queue, plan.queue_key, options.queue_name, impl_->topology_};
    const std::string_view queue = to.queue, key = to.key;
    if (options.unique_for.count() != 0 || !options.unique_key.empty()) {
        check_unique_options(options, "enqueue");
        return enqueue_one_unique(impl_->conn_, impl_->topology_, plan, job_name, queue, key, kwargs,
                                  options);
    }
    std::string id = detail::uuid4_hex();
    Scratch& s = Scratch::get();
    s.payload.clear();
    s.metadata.clear();
    append_metadata(s.metadata, options.metadata, detail::unix_now());
    write_payload(s.payload, plan, id, kwargs, s.metadata);
    s.pipeline.command("RPUSH", key, s.payload);
    s.pipeline.command("SADD", keys::queues, queue);
    auto replies = impl_->conn_.execute(s.pipeline);
    detail::check_replies(replies, s.pipeline);  // names the key of a refused command
    s.trim();
    return id;
}

std::vector<std::string> QueueManager::enqueue_batch(std::span<const JobSpec> jobs) const {
    // Validate everything first: a bad job sends nothing (payloads are
    // serialized while the pipeline is built, before anything is sent).
    struct Resolved {
        const Impl::JobPlan* plan;
        std::string_view queue;
    };
    std::vector<Resolved> resolved(jobs.size());
    std::vector<std::unique_ptr<const Impl::JobPlan>> uncached_plans;
    std::map<std::string_view, std::string, std::less<>> requested_keys;  // queue → key, for explicit queues
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& spec = jobs[i];
        try {
            std::unique_ptr<const Impl::JobPlan> uncached;
            const Impl::JobPlan& plan = impl_->plan_for(spec.job_name, uncached);
            if (uncached) uncached_plans.push_back(std::move(uncached));
            check_object(spec.kwargs, "kwargs");
            check_object(spec.options.metadata, "metadata");
            if (spec.options.unique_for.count() != 0 || !spec.options.unique_key.empty())
                throw ConfigurationError(
                    "enqueue_batch does not enqueue unique jobs (use enqueue or enqueue_many)");
            resolved[i].plan = &plan;
            if (spec.options.queue_name.empty()) {
                resolved[i].queue = plan.queue;
            } else {
                detail::validate_queue_name(spec.options.queue_name);
                resolved[i].queue = spec.options.queue_name;
            }
        } catch (const ConfigurationError& e) {
            throw ConfigurationError(fmt::format("job #{}: {}", i, e.what()));
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("job #{}: {}", i, e.what()));
        }
    }
    std::vector<std::string> ids;
    if (jobs.empty()) return ids;
    ids.reserve(jobs.size());
    Scratch& s = Scratch::get();
    const double now = detail::unix_now();
    auto payload_of = [&](std::size_t i) -> std::string_view {
        s.payload.clear();
        ids.push_back(detail::uuid4_hex());
        try {
            write_payload(s.payload, *resolved[i].plan, ids.back(), jobs[i].kwargs,
                          metadata_text(jobs[i].options.metadata, now));
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("job #{}: {}", i, e.what()));
        }
        return s.payload;
    };
    // Runs of consecutive jobs for the same queue share one RPUSH.
    std::set<std::string_view> names;
    for (std::size_t begin = 0; begin < jobs.size();) {
        std::string_view queue = resolved[begin].queue;
        std::size_t end = begin + 1;
        while (end < jobs.size() && resolved[end].queue == queue) ++end;
        names.insert(queue);
        std::string_view key;
        if (resolved[begin].plan->queue == queue) {
            key = resolved[begin].plan->queue_key;
        } else {
            auto it = requested_keys.find(queue);
            if (it == requested_keys.end())
                it = requested_keys.emplace(queue, impl_->topology_.queue_key(queue)).first;
            key = it->second;
        }
        s.pipeline.command("RPUSH", key, detail::IndexedRange(begin, end, payload_of));
        begin = end;
    }
    s.pipeline.command("SADD", keys::queues, names);
    auto replies = impl_->conn_.execute(s.pipeline);
    detail::check_replies(replies, s.pipeline);  // names the key of a refused command
    s.trim();
    return ids;
}

std::vector<std::string> QueueManager::enqueue_many(std::string_view job_name,
                                                    std::span<const nlohmann::json> kwargs_list,
                                                    const EnqueueOptions& options) const {
    std::unique_ptr<const Impl::JobPlan> uncached;
    const Impl::JobPlan& plan = impl_->plan_for(job_name, uncached);
    check_object(options.metadata, "metadata");
    for (std::size_t i = 0; i < kwargs_list.size(); ++i)
        if (!kwargs_list[i].is_null() && !kwargs_list[i].is_object())
            throw QueueError(
                fmt::format("kwargs #{} must be a JSON object, not a {}", i, kwargs_list[i].type_name()));
    std::vector<std::string> ids;
    if (kwargs_list.empty()) return ids;
    const Destination to{plan.queue, plan.queue_key, options.queue_name, impl_->topology_};
    const std::string_view queue = to.queue, key = to.key;
    if (options.unique_for.count() != 0 || !options.unique_key.empty()) {
        check_unique_options(options, "enqueue_many");
        return enqueue_unique(impl_->conn_, impl_->topology_, plan, job_name, queue, key, kwargs_list,
                              options);
    }

    // Each payload is serialized into one reused buffer and copied straight
    // into the (reused) command buffer: no per-job strings besides the ids.
    ids.reserve(kwargs_list.size());
    Scratch& s = Scratch::get();
    const std::string metadata = metadata_text(options.metadata, detail::unix_now());
    auto payload_of = [&](std::size_t i) -> std::string_view {
        s.payload.clear();
        ids.push_back(detail::uuid4_hex());
        write_payload(s.payload, plan, ids.back(), kwargs_list[i], metadata);
        return s.payload;
    };
    // Several RPUSHes of bounded size (one huge command would stall the
    // server for its whole length), all in one round trip.
    constexpr std::size_t chunk = 10000;
    for (std::size_t at = 0; at < kwargs_list.size(); at += chunk) {
        std::size_t end = std::min(at + chunk, kwargs_list.size());
        s.pipeline.command("RPUSH", key, detail::IndexedRange(at, end, payload_of));
    }
    s.pipeline.command("SADD", keys::queues, queue);
    auto replies = impl_->conn_.execute(s.pipeline);
    detail::check_replies(replies, s.pipeline);  // names the key of a refused command
    s.trim();
    return ids;
}

Job QueueManager::get_job(std::string_view job_id, std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? impl_->default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    auto entries = impl_->conn_.command("LRANGE", impl_->topology_.queue_key(queue), 0, -1).as_array();
    bool plain_id = std::all_of(job_id.begin(), job_id.end(), [](char c) {
        return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/';
    });
    for (const auto& entry : entries) {
        // Cheap pre-check: skip entries whose text cannot hold this id (only
        // for ids JSON writes unescaped).
        if (plain_id && entry.view().find(job_id) == std::string_view::npos) continue;
        try {
            Job job = Job::from_payload(entry.view(), queue, impl_->conn_);
            if (job.id() == job_id) return job;
        } catch (const QueueError&) {
            // A malformed entry is not the job asked for; the worker files it as failed.
        }
    }
    throw QueueError(fmt::format("no job '{}' in queue '{}'", job_id, queue));
}

std::vector<Job> QueueManager::get_jobs(std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? impl_->default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    auto entries = impl_->conn_.command("LRANGE", impl_->topology_.queue_key(queue), 0, -1).as_array();
    std::vector<Job> jobs;
    jobs.reserve(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
        try {
            jobs.push_back(Job::from_payload(entries[i].view(), queue, impl_->conn_));
        } catch (const QueueError& e) {
            throw QueueError(fmt::format("queue '{}' entry {}: {}", queue, i, e.what()));
        }
    }
    return jobs;
}

std::size_t QueueManager::queue_length(std::string_view queue_name) const {
    std::string queue = queue_name.empty() ? impl_->default_queue_ : std::string(queue_name);
    detail::validate_queue_name(queue);
    return static_cast<std::size_t>(
        impl_->conn_.command("LLEN", impl_->topology_.queue_key(queue)).as_integer());
}

std::vector<std::string> QueueManager::queue_names() const {
    std::vector<std::string> names;
    for (const auto& r : impl_->conn_.command("SMEMBERS", keys::queues).as_array())
        names.push_back(r.as_string());
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace retools
