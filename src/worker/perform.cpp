// Performing one job: payload → Job, lookups, events, the call. Every problem
// becomes an outcome; nothing escapes.

#include <cxxabi.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <typeinfo>

#include <fmt/format.h>

#include <retools/log.hpp>
#include <retools/script.hpp>

#include "generated/lua_scripts.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"
#include "worker/outcome.hpp"

namespace retools {

namespace {
thread_local Job* current = nullptr;

struct CurrentJob {
    explicit CurrentJob(Job* job) noexcept : previous(current) { current = job; }
    ~CurrentJob() { current = previous; }
    Job* previous;
};
}  // namespace

Job* current_job() noexcept {
    return current;
}

namespace detail {

namespace {

std::string demangle(const char* name) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status),
                                               std::free);
    return status == 0 && out ? std::string(out.get()) : std::string(name);
}

// Thrown (internally) when a thread-mode job returned after its timeout.
struct TimedOut {};

// The handlers a job subscribed to, resolved to functions.
struct Handlers {
    std::vector<std::shared_ptr<const PrerunHandler>> prerun;
    std::vector<std::shared_ptr<const PostrunHandler>> postrun;
    std::vector<std::shared_ptr<const FailureHandler>> failure;
    std::vector<std::shared_ptr<const WrapperHandler>> wrapper;
};

template <class Fn, class Find>
void resolve(const nlohmann::json& names, std::string_view event, std::vector<std::shared_ptr<const Fn>>& out,
             Find find) {
    for (const auto& name : names) {
        const std::string& n = name.get_ref<const std::string&>();
        auto fn = find(n);
        if (!fn) throw QueueError(fmt::format("unknown {} handler '{}'", event, n));
        out.push_back(std::move(fn));
    }
}

Handlers resolve_handlers(const Job& job, const JobRegistry& own) {
    Handlers h;
    const JobRegistry& global = JobRegistry::global();
    for (const auto& [event, names] : job.events().items()) {
        if (event == "job_prerun")
            resolve(names, event, h.prerun, [&](std::string_view n) {
                auto f = own.find_prerun(n);
                return f ? f : global.find_prerun(n);
            });
        else if (event == "job_postrun")
            resolve(names, event, h.postrun, [&](std::string_view n) {
                auto f = own.find_postrun(n);
                return f ? f : global.find_postrun(n);
            });
        else if (event == "job_failure")
            resolve(names, event, h.failure, [&](std::string_view n) {
                auto f = own.find_failure(n);
                return f ? f : global.find_failure(n);
            });
        else if (event == "job_wrapper")
            resolve(names, event, h.wrapper, [&](std::string_view n) {
                auto f = own.find_wrapper(n);
                return f ? f : global.find_wrapper(n);
            });
        // Other event names are not ours to run (the original ignores them too).
    }
    return h;
}

// Calls wrappers[i..] around the job function.
struct Chain {
    Job& job;
    const JobFunction& fn;
    const std::vector<std::shared_ptr<const WrapperHandler>>& wrappers;

    nlohmann::json call(std::size_t i) const {
        if (i == wrappers.size()) return fn(job.kwargs());
        WrapperNext next = [this, i] { return call(i + 1); };
        return (*wrappers[i])(job, next);
    }
};

void store_result(JobOutcome& out, const Job& job, bool ok, nlohmann::json value, const std::string& error) {
    try {
        auto ttl = job.result_ttl();
        if (!ttl) return;
        JobResult result;
        result.ok = ok;
        result.value = std::move(value);
        result.error = error;
        out.result = result.to_json();
        out.result_ttl = ttl->count();
    } catch (const std::exception& e) {
        if (ok) {
            out.status = JobStatus::failed;
            out.error = fmt::format("cannot store the result: {}", e.what());
        }
    }
}

}  // namespace

std::string describe_exception(std::exception_ptr error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return fmt::format("{}: {}", demangle(typeid(e).name()), e.what());
    } catch (...) {
        auto* type = abi::__cxa_current_exception_type();
        return fmt::format("exception of type {}", type ? demangle(type->name()) : std::string("unknown"));
    }
}

namespace {

// A failed job: a retry when it asks for one (with state["retried"] counted and
// metadata.enqueued_at = when it is due again), else a failure.
void settle_failure(JobOutcome& out, Job& job) {
    out.result.clear();
    try {
        if (auto delay = job.next_retry_delay()) {
            int done = job.retries_done();
            job.state()["retried"] = done + 1;
            // Equal jitter: between half and all of the delay, so that jobs
            // that failed together (a backend down) do not retry together.
            const double spread = static_cast<double>(random_u64() >> 11) * 0x1p-53;  // [0, 1)
            const double due = unix_now() + delay->count() * (0.5 + 0.5 * spread);
            job.metadata()["enqueued_at"] = due;
            out.retry_member = delayed_member(job.queue(), job.to_json());
            out.retry_at = due;
            out.status = JobStatus::retry;
            return;
        }
    } catch (const std::exception& e) {
        out.error += fmt::format("; no retry: {}", e.what());
    }
    out.status = JobStatus::failed;
    store_result(out, job, false, nullptr, out.error);
}

// A unique job's claim (metadata `unique_claim`, `unique_until`), released
// when the job starts or ends, only while it still names this job
// (src/queue/lua/unique_release.lua). A failure to release is logged: the
// claim then expires after its unique_for.
struct UniqueClaim {
    std::string key;
    bool until_end = false;

    static std::optional<UniqueClaim> of(const Job& job) {
        const auto& m = job.metadata();
        auto it = m.find("unique_claim");
        if (it == m.end() || !it->is_string()) return std::nullopt;
        const auto& key = it->get_ref<const std::string&>();
        if (!key.starts_with(queue_keys::unique_prefix)) return std::nullopt;  // never another key
        return UniqueClaim{key, m.value("unique_until", std::string()) == "end"};
    }

    void release(const Connection& conn, const std::string& job_id) const noexcept {
        try {
            static const Script script{std::string(lua::queue_unique_release)};
            script(conn, {key}, job_id);
        } catch (const std::exception& e) {
            detail::log(LogLevel::warning,
                        fmt::format("retools-worker: job {}: unique claim {} not released: {}", job_id, key,
                                    e.what()));
        }
    }
};

std::string timed_out(double limit) {
    return fmt::format("job timed out after {:g} s", limit);
}

JobOutcome perform(const TakenJob& taken, const JobRegistry& own, const Connection& conn,
                   const PerformLimits& limits) {
    JobOutcome out;
    auto started = std::chrono::steady_clock::now();
    std::optional<UniqueClaim> claim;
    auto finish = [&]() -> JobOutcome {
        out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        // Ended for good (a retry keeps the claim until its last attempt).
        if (claim && claim->until_end && out.status != JobStatus::retry && out.status != JobStatus::requeue)
            claim->release(conn, out.job_id);
        return std::move(out);
    };

    if (taken.split == 0 && taken.entry.find('\n') == std::string::npos) {
        out.error = "unreadable processing-list entry";
        return finish();
    }
    if (limits.max_payload_bytes && taken.payload().size() > limits.max_payload_bytes) {
        out.error =
            fmt::format("malformed payload: {} bytes, more than WorkerOptions::max_payload_bytes ({})",
                        taken.payload().size(), limits.max_payload_bytes);
        return finish();
    }
    std::optional<Job> parsed;
    try {
        parsed.emplace(Job::from_payload(taken.payload(), taken.queue(), conn));
    } catch (const std::exception& e) {
        out.error = fmt::format("malformed payload: {}", e.what());
        return finish();
    }
    Job& job = *parsed;
    out.job_id = job.id();
    out.job_name = job.name();
    claim = UniqueClaim::of(job);
    if (claim && !claim->until_end) claim->release(conn, job.id());

    std::shared_ptr<const JobFunction> fn;
    Handlers handlers;
    try {
        fn = own.find_job(job.name());
        if (!fn) fn = JobRegistry::global().find_job(job.name());
        if (!fn) throw QueueError(fmt::format("unknown job '{}'", job.name()));
        handlers = resolve_handlers(job, own);
    } catch (const std::exception& e) {
        out.error = e.what();
        store_result(out, job, false, nullptr, out.error);
        return finish();
    }

    CurrentJob scope(&job);
    auto late = [&] {
        return limits.job_timeout > 0 &&
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >
                   limits.job_timeout;
    };
    try {
        for (const auto& h : handlers.prerun) (*h)(job);
        nlohmann::json result = Chain{job, *fn, handlers.wrapper}.call(0);
        if (late()) throw TimedOut{};
        for (const auto& h : handlers.postrun) (*h)(job, result);
        out.status = JobStatus::succeeded;
        store_result(out, job, true, std::move(result), {});
        return finish();
    } catch (const AbortJob&) {
        out.status = JobStatus::aborted;
        return finish();
    } catch (const TimedOut&) {
        // Threads cannot be killed: the job ran to its end, and only now fails.
        out.error = timed_out(limits.job_timeout);
        out.timed_out = true;
    } catch (...) {
        std::exception_ptr error = std::current_exception();
        out.error = late() ? timed_out(limits.job_timeout) : describe_exception(error);
        for (const auto& h : handlers.failure) {
            try {
                (*h)(job, error);
            } catch (...) {
                out.error += "; a job_failure handler threw " + describe_exception(std::current_exception());
            }
        }
    }
    settle_failure(out, job);
    return finish();
}

}  // namespace

void fail_outcome(JobOutcome& out, const TakenJob& taken, std::string error, const Connection& conn) {
    out.error = std::move(error);
    out.status = JobStatus::failed;
    out.result.clear();
    try {
        Job job = Job::from_payload(taken.payload(), taken.queue(), conn);
        out.job_id = job.id();
        out.job_name = job.name();
        settle_failure(out, job);
    } catch (const std::exception&) {
        // an unreadable payload never ran long: nothing more to say
    }
}

JobOutcome perform_job(const TakenJob& taken, const JobRegistry& own, const Connection& conn,
                       const PerformLimits& limits) {
    try {
        return perform(taken, own, conn, limits);
    } catch (...) {
        // Out of memory while bookkeeping, say: still an outcome, never a lost job.
        JobOutcome out;
        out.error = "worker error: " + describe_exception(std::current_exception());
        return out;
    }
}

}  // namespace detail

}  // namespace retools
