// Worker: the dispatch loop. One thread (the caller of work()) owns every
// decision: what to take, when to wait, what to finish, how to stop. Executor
// threads, queue waiters and the signal thread only report to it.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <list>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/detail/python_repr.hpp>

#include "queue/keys.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"
#include "worker/executor.hpp"
#include "worker/fetch.hpp"
#include "worker/liveness.hpp"
#include "worker/signals.hpp"

#ifndef RETOOLS_VERSION_STRING
#define RETOOLS_VERSION_STRING "0"
#endif

namespace retools {

namespace keys = detail::queue_keys;
using detail::FinishedJob;
using detail::JobStatus;
using detail::TakenJob;
using steady = std::chrono::steady_clock;

namespace {
// A finished job leaves the processing list (and its result is stored) at most
// this long after it finished, whatever else runs.
constexpr auto ack_delay = std::chrono::milliseconds(2);
// Fork mode: pauses after a fork or pipe that failed, doubling up to the cap.
constexpr auto fork_backoff_min = std::chrono::milliseconds(50);
constexpr auto fork_backoff_max = std::chrono::milliseconds(5000);

std::string json_text(std::string_view s) {
    return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

struct Worker::State final : detail::CompletionSink {
    State(std::vector<std::string> q, WorkerOptions o)
        : queues(std::move(q)),
          options(std::move(o)),
          conn(options.connection ? *options.connection : global_connection()) {}

    std::vector<std::string> queues;
    WorkerOptions options;
    Connection conn;
    std::string fixed_id;  // from_id(): the registered id, not ours
    mutable std::string id;
    mutable pid_t id_pid = -1;
    JobRegistry registry;

    // Shared with executors, waiters, the signal thread and stop()/pause().
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<FinishedJob> completed;
    steady::time_point first_pending;                         // when `completed` last became non-empty
    bool ack_watch = false;                                   // the waiting loop wants to know when it does
    std::vector<std::pair<TakenJob, std::string>> unstarted;  // fork/pipe failed: requeue, back off
    bool queue_ready = false;
    bool stop_now = false;
    bool stop_graceful = false;
    bool paused = false;
    bool kill_children = false;
    std::uint64_t control = 0;  // bumped on every request, so waits notice it
    // The dispatch loop, waiting, wants to be woken once `completed` holds this
    // many jobs; fewer would only wake it to go back to sleep.
    std::size_t wake_after = 1;

    void complete(FinishedJob done) override {
        bool wake;
        {
            std::lock_guard lock(mutex);
            const bool was_empty = completed.empty();
            if (was_empty) first_pending = steady::now();
            completed.push_back(std::move(done));
            wake = completed.size() == wake_after || (was_empty && ack_watch);
        }
        if (wake) cv.notify_one();
    }

    void complete_many(std::vector<FinishedJob>& done) override {
        bool wake;
        {
            std::lock_guard lock(mutex);
            const std::size_t before = completed.size();
            if (completed.empty()) {
                first_pending = steady::now();
                completed.swap(done);
            } else {
                for (auto& d : done) completed.push_back(std::move(d));
            }
            wake = (before < wake_after && completed.size() >= wake_after) || (before == 0 && ack_watch);
        }
        done.clear();
        if (wake) cv.notify_one();
    }

    void not_started(TakenJob job, std::string why) override {
        {
            std::lock_guard lock(mutex);
            unstarted.emplace_back(std::move(job), std::move(why));
            ++control;
        }
        cv.notify_one();
    }

    template <class F>
    void request(F change) {
        {
            std::lock_guard lock(mutex);
            change();
            ++control;
        }
        cv.notify_one();
    }

    void on_signal(int sig) {
        switch (sig) {
            case SIGTERM:
            case SIGINT:
                request([&] { stop_now = true; });
                break;
            case SIGQUIT:
                request([&] { stop_graceful = true; });
                break;
            case SIGUSR1:
                request([&] { kill_children = true; });
                break;
            case SIGUSR2:
                request([&] { paused = true; });
                break;
            case SIGCONT:
                request([&] { paused = false; });
                break;
            default:
                break;
        }
    }

    // While working under another id than the usual one (a live twin in another
    // container has it), that id. Strings are kept until destruction, so
    // references handed out by id() stay valid.
    std::atomic<const std::string*> working_id{nullptr};
    std::string instance;  // random per work() call: tells our heartbeat from a twin's
    double started = 0;    // when work() started
    std::mutex ids_mutex;
    std::list<std::string> ids_store;

    const std::string& keep_id(std::string value) {
        std::lock_guard lock(ids_mutex);
        return ids_store.emplace_back(std::move(value));
    }

    const std::string& current_id() const {
        if (const std::string* w = working_id.load()) return *w;
        if (!fixed_id.empty()) return fixed_id;
        pid_t me = ::getpid();
        if (id_pid != me) {
            std::string names;
            for (const auto& q : queues) {
                if (!names.empty()) names += ',';
                names += q;
            }
            id = fmt::format("{}:{}:{}", detail::hostname(), me, names);
            id_pid = me;
        }
        return id;
    }

    bool logs(WorkerLog level) const { return options.log >= level; }

    /// The value of retools:heartbeat:<id> (see docs/worker-fleet.md).
    std::string heartbeat_json(std::string_view wid, std::size_t busy) const {
        std::string qs;
        for (const auto& q : queues) {
            if (!qs.empty()) qs += ", ";
            qs += json_text(q);
        }
        return fmt::format(
            R"({{"id": {}, "host": {}, "pid": {}, "started": {}, "queues": [{}], "busy": {}, "threads": {}, )"
            R"("mode": "{}", "version": "{}", "beat": {}, "instance": "{}", "pid_space": {}}})",
            json_text(wid), json_text(detail::hostname()), ::getpid(), detail::python_repr(started), qs, busy,
            options.concurrency, options.mode == ExecutionMode::fork ? "fork" : "thread",
            RETOOLS_VERSION_STRING, detail::python_repr(detail::unix_now()), instance,
            json_text(detail::pid_space()));
    }
};

namespace {

void validate_queues(const std::vector<std::string>& queues) {
    if (queues.empty()) throw ConfigurationError("retools: no queues were configured for this worker");
    for (const auto& q : queues) {
        if (q.empty()) throw ConfigurationError("retools: a worker queue name is empty");
        if (q.find_first_of(":,\n") != std::string::npos)
            throw ConfigurationError(
                fmt::format("retools: worker queue name '{}' contains ':', ',' or a newline", q));
    }
}

std::string_view status_text(JobStatus s) {
    switch (s) {
        case JobStatus::succeeded:
            return "ok";
        case JobStatus::failed:
            return "failed";
        case JobStatus::retry:
            return "failed, retry scheduled";
        case JobStatus::aborted:
            return "aborted";
        case JobStatus::requeue:
            return "interrupted, requeued";
    }
    return "?";
}

}  // namespace

Worker::Worker(std::vector<std::string> queues, WorkerOptions options) {
    validate_queues(queues);
    if (options.concurrency == 0)
        throw ConfigurationError("retools: WorkerOptions::concurrency must be at least 1");
    if (options.prefetch_window.count() < 0)
        throw ConfigurationError(
            fmt::format("retools: WorkerOptions::prefetch_window must not be negative, got {} ms",
                        options.prefetch_window.count()));
    if (options.heartbeat_interval.count() <= 0 || options.heartbeat_interval >= options.heartbeat_timeout)
        throw ConfigurationError(fmt::format(
            "retools: WorkerOptions::heartbeat_interval ({} ms) must be positive and shorter than "
            "heartbeat_timeout ({} ms)",
            options.heartbeat_interval.count(), options.heartbeat_timeout.count()));
    if (options.job_timeout && options.job_timeout->count() <= 0)
        throw ConfigurationError(fmt::format(
            "retools: WorkerOptions::job_timeout must be positive, got {} ms", options.job_timeout->count()));
    state_ = std::make_unique<State>(std::move(queues), std::move(options));
    state_->current_id();  // computed now, so id() from other threads only reads it
}

Worker::~Worker() = default;
Worker::Worker(Worker&&) noexcept = default;
Worker& Worker::operator=(Worker&&) noexcept = default;

const std::string& Worker::id() const noexcept {
    return state_->current_id();
}
const std::vector<std::string>& Worker::queues() const noexcept {
    return state_->queues;
}
std::string Worker::queue_names() const {
    std::string names;
    for (const auto& q : state_->queues) {
        if (!names.empty()) names += ',';
        names += q;
    }
    return names;
}
const Connection& Worker::connection() const noexcept {
    return state_->conn;
}
JobRegistry& Worker::registry() noexcept {
    return state_->registry;
}
void Worker::register_job(std::string name, JobFunction fn) {
    state_->registry.register_job(std::move(name), std::move(fn));
}
void Worker::register_prerun(std::string name, PrerunHandler fn) {
    state_->registry.register_prerun(std::move(name), std::move(fn));
}
void Worker::register_postrun(std::string name, PostrunHandler fn) {
    state_->registry.register_postrun(std::move(name), std::move(fn));
}
void Worker::register_failure(std::string name, FailureHandler fn) {
    state_->registry.register_failure(std::move(name), std::move(fn));
}
void Worker::register_wrapper(std::string name, WrapperHandler fn) {
    state_->registry.register_wrapper(std::move(name), std::move(fn));
}

void Worker::stop(bool graceful) {
    state_->request([&] { (graceful ? state_->stop_graceful : state_->stop_now) = true; });
}
void Worker::pause() {
    state_->request([&] { state_->paused = true; });
}
void Worker::resume() {
    state_->request([&] { state_->paused = false; });
}

void Worker::register_worker() const {
    const std::string& wid = id();
    const double now = detail::unix_now();
    Pipeline p;
    p.command("SADD", keys::workers, wid);
    p.command("SET", keys::worker_started(wid), now);
    p.command("SET", keys::worker_queues(wid), queue_names());
    p.command("SET", keys::worker_threads(wid), state_->options.concurrency);
    if (state_->started == 0) state_->started = now;
    p.command("SET", keys::heartbeat(wid), state_->heartbeat_json(wid, 0), "PX",
              state_->options.heartbeat_timeout.count());
    p.command("ZADD", keys::heartbeats, now, wid);
    // On a cluster these keys are in many slots: a split pipeline, not a transaction.
    const auto replies = state_->conn.is_cluster() ? state_->conn.execute(p) : state_->conn.transaction(p);
    for (const Reply& r : replies) r.check();
}

void Worker::unregister_worker(std::string_view worker_id) const {
    std::string wid(worker_id.empty() ? std::string_view(id()) : worker_id);
    Pipeline p;
    p.command("SREM", keys::workers, wid);
    p.command("DEL", keys::worker(wid));
    p.command("DEL", keys::worker_started(wid));
    p.command("DEL", keys::worker_queues(wid));
    p.command("DEL", keys::worker_threads(wid));
    p.command("DEL", keys::heartbeat(wid));
    p.command("ZREM", keys::heartbeats, wid);
    const auto replies = state_->conn.is_cluster() ? state_->conn.execute(p) : state_->conn.transaction(p);
    for (const Reply& r : replies) r.check();
}

std::size_t Worker::prune_dead_workers() const {
    return detail::prune_dead_workers(state_->conn, state_->options.max_recoveries);
}

Worker Worker::from_id(std::string_view worker_id, const Connection& conn) {
    if (conn.command("SISMEMBER", keys::workers, worker_id).as_integer() != 1)
        throw QueueError(fmt::format("retools: no registered worker '{}'", worker_id));
    Reply queues = conn.command("GET", keys::worker_queues(worker_id));
    if (queues.is_nil()) throw QueueError(fmt::format("retools: worker '{}' has no queues key", worker_id));
    Worker w{detail::split_queue_names(queues.view()), {.connection = conn}};
    w.state_->fixed_id = std::string(worker_id);
    return w;
}

WorkSummary Worker::work(WorkOptions options) {
    State& s = *state_;
    const std::string base_id = id();
    if (!detail::claim_worker_id(base_id))
        throw ConfigurationError(
            fmt::format("retools: worker '{}' is already working in this process", base_id));
    struct Release {
        State& s;
        std::vector<std::string> ids;
        ~Release() {
            s.working_id = nullptr;
            for (const auto& id : ids) detail::release_worker_id(id);
        }
    } release{s, {base_id}};
    const auto& opt = s.options;
    s.instance = detail::uuid4_hex().substr(0, 16);
    s.started = detail::unix_now();

    // Claim our id's heartbeat. Another live instance may hold it: a process
    // with our host name and pid in another container (containers in a pod
    // share the host name, and each is pid 1). Then this worker works as
    // `<host>~<token>:<pid>:<queues>`: still the original's three fields, so
    // Python reads it, and a host part no Python worker will prune. A holder
    // that is a gone process of our own pid space (a predecessor with our pid)
    // is dead: its jobs are recovered first.
    std::string wid = base_id;
    for (int attempt = 0;; ++attempt) {
        auto foreign =
            detail::claim_heartbeat(s.conn, wid, s.instance, s.heartbeat_json(wid, 0), opt.heartbeat_timeout);
        if (!foreign) break;
        if (attempt < 3 && detail::heartbeat_owner_gone(*foreign, s.instance)) {
            detail::recover_worker(s.conn, wid, detail::RecoverMode::dead, opt.max_recoveries, false,
                                   *foreign);
            continue;
        }
        wid = fmt::format("{}~{}:{}:{}", detail::hostname(), s.instance.substr(0, 8), ::getpid(),
                          queue_names());
        if (!detail::claim_worker_id(wid))
            throw ConfigurationError(
                fmt::format("retools: worker '{}' is already working in this process", wid));
        release.ids.push_back(wid);
        s.working_id = &s.keep_id(wid);
        if (s.logs(WorkerLog::failures))
            fmt::print(stderr, "retools-worker: {} is held by another live process; working as {}\n", base_id,
                       wid);
    }

    // Requests are cleared on the way out, not here: a stop() that races with
    // the start of work() still stops it.
    struct Reset {
        State& s;
        ~Reset() {
            std::lock_guard lock(s.mutex);
            s.stop_now = s.stop_graceful = s.kill_children = s.queue_ready = false;
            s.completed.clear();
            s.unstarted.clear();
        }
    } reset{s};
    const bool fork_mode = opt.mode == ExecutionMode::fork;
    const std::size_t concurrency = opt.concurrency;
    const auto interval = std::max(options.interval, std::chrono::milliseconds(1));

    std::optional<detail::SignalWatcher> signals;
    if (opt.handle_signals) signals.emplace([&s](int sig) { s.on_signal(sig); });

    // Start-up, as the original plus recovery: our own leftovers (a previous
    // process with our id), then every dead worker's jobs, on any host.
    detail::recover_worker(s.conn, wid, detail::RecoverMode::own, opt.max_recoveries, false);
    detail::prune_dead_workers(s.conn, opt.max_recoveries);
    detail::recover_dead_workers(s.conn, opt.heartbeat_timeout, opt.max_recoveries, true);
    register_worker();

    WorkSummary summary;
    {
        detail::ReliableFetch fetch(s.conn, wid, s.queues);
        detail::ExecutorConfig config;
        config.limits.max_payload_bytes = opt.max_payload_bytes;
        if (opt.job_timeout) config.limits.job_timeout = detail::to_seconds(*opt.job_timeout);
        config.job_timeout = opt.job_timeout;
        std::unique_ptr<detail::Executor> executor =
            fork_mode ? detail::make_fork_executor(s.registry, s.conn, s, config)
                      : detail::make_thread_executor(concurrency, s.registry, s.conn, s, config);
        std::optional<detail::QueueWaiter> waiter;
        if (options.blocking && !options.burst)
            waiter.emplace(s.conn, s.queues, interval, [&s] {
                {
                    std::lock_guard lock(s.mutex);
                    s.queue_ready = true;
                }
                s.cv.notify_one();
            });

        detail::FinishBatch batch;
        // Finish operations a key of the wrong type refused (their jobs wait in
        // the processing list): sent again every 200 ms while fetching goes on.
        detail::FinishBatch kept;
        auto kept_retry_at = steady::time_point::min();
        std::vector<TakenJob> taken;
        std::vector<FinishedJob> done;
        std::string last_note;  // the fetch's last complaint, logged when it changes
        std::size_t in_flight = 0;
        std::size_t taken_total = 0;
        double avg_seconds = -1;  // average job duration, for the prefetch window
        bool killed_for_stop = false;
        bool escalated = false;
        constexpr auto stop_grace = std::chrono::seconds(10);  // TERM, then KILL after this long
        auto kill_deadline = std::chrono::steady_clock::time_point::max();
        bool resync = false;        // a fetch failed: its jobs may sit unseen in our processing list
        bool queues_empty = false;  // the last fetch found nothing more to take
        int failures_in_a_row = 0;
        // A Sentinel failover may have lost the acknowledgement of finished jobs
        // (sent to the old master after its replica detached): their entries
        // then sit in our processing list on the new master. Resync after each.
        std::uint64_t master_switches = s.conn.master_switches();
        // Heartbeats ride on the fetch; recovery of dead workers runs as often.
        auto next_beat = steady::now() + opt.heartbeat_interval;
        auto next_recovery = next_beat;
        auto next_full_scan = steady::now() + 10 * opt.heartbeat_timeout;
        auto backoff = std::chrono::milliseconds(0);  // fork failures
        auto backoff_until = steady::time_point::min();
        std::vector<std::pair<TakenJob, std::string>> unstarted;
        detail::Beat beat;
        beat.ttl_ms = opt.heartbeat_timeout.count();
        beat.queues = queue_names();
        beat.started = detail::python_repr(s.started);
        beat.threads = concurrency;

        auto prefetch = [&]() -> std::size_t {
            if (fork_mode || opt.prefetch_window.count() == 0) return 0;
            std::size_t cap = opt.max_prefetch == 0 ? 10000 : opt.max_prefetch;
            if (avg_seconds < 0) return std::min<std::size_t>(cap, 4);
            double n = detail::to_seconds(opt.prefetch_window) / std::max(avg_seconds, 1e-7);
            return n >= static_cast<double>(cap) ? cap : static_cast<std::size_t>(n);
        };
        auto wants_refill = [&](std::size_t load, std::size_t pf) {
            return load < concurrency || (pf > 0 && load <= concurrency + pf / 2);
        };

        for (;;) {
            bool stop_now, stopping, paused, kill;
            std::uint64_t control;
            {
                std::lock_guard lock(s.mutex);
                done.swap(s.completed);
                unstarted.swap(s.unstarted);
                s.queue_ready = false;
                stop_now = s.stop_now;
                stopping = s.stop_now || s.stop_graceful;
                paused = s.paused;
                kill = s.kill_children;
                s.kill_children = false;
                control = s.control;
            }
            if (kill) executor->signal_running(SIGTERM);
            if (stop_now && !killed_for_stop) {
                executor->signal_running(SIGTERM);
                killed_for_stop = true;
                kill_deadline = std::chrono::steady_clock::now() + stop_grace;
            }
            if (killed_for_stop && !escalated && std::chrono::steady_clock::now() >= kill_deadline) {
                executor->signal_running(SIGKILL);  // a job process that ignores TERM
                escalated = true;
            }

            const double now = detail::unix_now();
            const auto steady_now = steady::now();
            const auto timeout_check = executor->enforce_timeouts();
            if (!done.empty()) backoff = std::chrono::milliseconds(0);  // jobs run again
            if (!unstarted.empty()) {
                // Not run: back at the head of the queue (oldest first), and a pause.
                backoff = std::clamp(backoff * 2, fork_backoff_min, fork_backoff_max);
                backoff_until = steady_now + backoff;
                if (s.logs(WorkerLog::failures))
                    fmt::print(stderr, "retools-worker: {}: {}; {} job(s) requeued, pausing {} ms\n", wid,
                               unstarted.front().second, unstarted.size(), backoff.count());
                for (auto it = unstarted.rbegin(); it != unstarted.rend(); ++it) batch.requeue(it->first);
                in_flight -= unstarted.size();
                unstarted.clear();
            }
            for (auto& d : done) {
                --in_flight;
                auto& o = d.outcome;
                if (o.status == JobStatus::failed && killed_for_stop &&
                    (o.killed_by == SIGTERM || o.killed_by == SIGKILL))
                    o.status = JobStatus::requeue;  // stopped by us, not failed: run it again later
                avg_seconds = avg_seconds < 0 ? o.seconds : 0.8 * avg_seconds + 0.2 * o.seconds;
                switch (o.status) {
                    case JobStatus::succeeded:
                        ++summary.succeeded;
                        break;
                    case JobStatus::failed:
                    case JobStatus::retry:
                        ++summary.failed;
                        break;
                    case JobStatus::aborted:
                        ++summary.aborted;
                        break;
                    case JobStatus::requeue:
                        ++summary.requeued;
                        break;
                }
                bool bad = o.status == JobStatus::failed || o.status == JobStatus::retry || o.timed_out;
                if (s.logs(WorkerLog::jobs) || (bad && s.logs(WorkerLog::failures)))
                    fmt::print(stderr, "retools-worker: job {} {} queue={} {:.3f}ms {}{}{}\n",
                               o.job_id.empty() ? "-" : o.job_id, o.job_name.empty() ? "-" : o.job_name,
                               d.job.queue(), o.seconds * 1000, status_text(o.status),
                               o.error.empty() ? "" : ": ", o.error);
                batch.add(std::move(d), wid, now);
            }
            done.clear();

            // max_jobs reached: take no more, but finish what was taken.
            const bool limit_reached = options.max_jobs && taken_total >= options.max_jobs;
            if (stopping) {
                auto back = executor->take_backlog();
                in_flight -= back.size();
                summary.requeued += back.size();
                // LPUSH one by one: newest first, so the oldest ends at the head.
                for (auto it = back.rbegin(); it != back.rend(); ++it) batch.requeue(*it);
            }

            std::size_t want = 0;
            const std::size_t pf = prefetch();
            const bool backing_off = steady_now < backoff_until;
            if (!stopping && !limit_reached && !paused && !backing_off && wants_refill(in_flight, pf)) {
                // Bounded: the script unpacks the batch onto Lua's stack (8000 slots).
                want = std::min<std::size_t>(concurrency + pf - in_flight, 4096);
                if (options.max_jobs) want = std::min(want, options.max_jobs - taken_total);
            }

            if (std::uint64_t sw = s.conn.master_switches(); sw != master_switches) {
                master_switches = sw;
                resync = true;
            }
            if (resync && in_flight == 0 && batch.empty()) {
                // A fetch whose reply was lost may have moved jobs to our processing
                // list that we never saw; with nothing in flight, all there is such.
                try {
                    if (std::size_t n =
                            detail::recover_worker(s.conn, wid, detail::RecoverMode::resync, 0, false)
                                .requeued;
                        n && s.logs(WorkerLog::failures))
                        fmt::print(stderr,
                                   "retools-worker: {}: requeued {} job(s) taken during a Redis error\n", wid,
                                   n);
                    resync = false;
                } catch (const Error&) {}
            }

            // Dead workers' jobs: stale heartbeats every beat, every processing
            // list now and then (those of workers that never beat).
            if (!stopping && steady_now >= next_recovery) {
                const bool full = steady_now >= next_full_scan;
                try {
                    auto r =
                        detail::recover_dead_workers(s.conn, opt.heartbeat_timeout, opt.max_recoveries, full);
                    if ((r.requeued || r.quarantined) && s.logs(WorkerLog::failures))
                        fmt::print(stderr,
                                   "retools-worker: {}: recovered dead workers' jobs: {} requeued, {} to "
                                   "retools:failed\n",
                                   wid, r.requeued, r.quarantined);
                    if (full) next_full_scan = steady_now + 10 * opt.heartbeat_timeout;
                } catch (const Error& e) {
                    if (s.logs(WorkerLog::failures))
                        fmt::print(stderr, "retools-worker: {}: recovering dead workers failed: {}\n", wid,
                                   e.what());
                }
                next_recovery = steady_now + opt.heartbeat_interval;
            }

            const bool beat_due = steady_now >= next_beat;
            const bool resend = !kept.empty() && steady_now >= kept_retry_at;
            std::size_t got = 0;
            if (want > 0 || !batch.empty() || beat_due || resend) {
                try {
                    if (beat_due) beat.json = s.heartbeat_json(wid, in_flight);
                    if (resend) batch.append(kept);
                    const bool had_kept = !kept.empty();
                    std::string note =
                        fetch.exchange(batch, want, in_flight == 0, beat_due ? &beat : nullptr, taken, &kept);
                    if (!had_kept && !kept.empty())
                        kept_retry_at = steady_now + std::chrono::milliseconds(200);
                    if (!note.empty() && s.logs(WorkerLog::failures) && note != last_note)
                        fmt::print(stderr, "retools-worker: {}: {}\n", wid, note);
                    last_note = std::move(note);
                    if (beat_due) next_beat = steady_now + opt.heartbeat_interval;
                    batch.clear();
                    failures_in_a_row = 0;
                } catch (const Error& e) {
                    ++failures_in_a_row;
                    resync = true;
                    if (s.logs(WorkerLog::failures))
                        fmt::print(stderr, "retools-worker: {}: Redis error, retrying: {}\n", wid, e.what());
                    if (stopping && in_flight == 0 && failures_in_a_row > 3)
                        break;  // leave the rest to recovery
                    std::unique_lock lock(s.mutex);
                    s.cv.wait_for(lock, std::chrono::milliseconds(std::min(100 * failures_in_a_row, 2000)),
                                  [&] { return s.control != control; });
                    continue;
                }
                got = taken.size();
                taken_total += got;
                in_flight += got;
                executor->submit_many(taken);
                taken.clear();
            }

            if ((stopping || limit_reached) && in_flight == 0 && batch.empty()) break;
            const bool drained = want > 0 && got < want;  // every queue came up empty
            if (want > 0) queues_empty = drained;
            if (options.burst && drained && in_flight == 0 && batch.empty()) break;
            if (got > 0 && !drained) continue;  // there may be more, and room for it

            if (drained && waiter) waiter->arm();
            std::unique_lock lock(s.mutex);
            auto wake_at = std::chrono::steady_clock::now() + interval;
            if (killed_for_stop && !escalated) wake_at = std::min(wake_at, kill_deadline);
            wake_at = std::min({wake_at, next_beat, next_recovery, timeout_check});
            if (!kept.empty()) wake_at = std::min(wake_at, kept_retry_at);
            if (backing_off) wake_at = std::min(wake_at, backoff_until);
            auto enough = [&](std::size_t pending) {
                if (pending == 0) return false;
                std::size_t left = in_flight - std::min(pending, in_flight);
                if (stopping || limit_reached || left == 0) return true;
                // Queues known empty: look again only when a thread idles, not
                // after every completion (blocking mode is told of new jobs anyway).
                return queues_empty ? left < concurrency : wants_refill(left, pf);
            };
            // enough() only turns true as jobs complete: the executors wake us
            // once, at the first count that is enough (found by bisection).
            std::size_t lo = 1, hi = std::max<std::size_t>(in_flight, 1);
            while (lo < hi) {
                std::size_t mid = lo + (hi - lo) / 2;
                if (enough(mid))
                    hi = mid;
                else
                    lo = mid + 1;
            }
            s.wake_after = lo;
            // Finished jobs wait for `enough` company at most ack_delay: the
            // first completion wakes us (once) to set that deadline.
            for (;;) {
                auto until = wake_at;
                if (!s.completed.empty()) until = std::min(until, s.first_pending + ack_delay);
                s.ack_watch = s.completed.empty();
                const bool woken = s.cv.wait_until(lock, until, [&] {
                    return s.control != control || s.queue_ready || enough(s.completed.size()) ||
                           (s.ack_watch && !s.completed.empty());
                });
                if (!woken || s.control != control || s.queue_ready || enough(s.completed.size())) break;
            }
            s.ack_watch = false;
            s.wake_after = 1;
        }
        executor.reset();  // joins threads / reaps children
    }
    signals.reset();
    try {
        // Jobs still held (kept for a key of the wrong type) stay registered
        // to us; our heartbeat then expires and another worker recovers them.
        long long held = 0;
        if (state_->conn.is_cluster()) {
            for (const auto& q : state_->queues)
                held += state_->conn.command("EXISTS", keys::processing(wid, q, true)).as_integer();
        } else {
            held = state_->conn.command("EXISTS", keys::processing(wid, "", false)).as_integer();
        }
        if (held == 0) unregister_worker(wid);
    } catch (const Error& e) {
        if (s.logs(WorkerLog::failures))
            fmt::print(stderr, "retools-worker: {}: could not unregister: {}\n", wid, e.what());
    }
    return summary;
}

}  // namespace retools
