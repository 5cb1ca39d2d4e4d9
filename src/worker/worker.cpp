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
#include <retools/log.hpp>

#include "queue/keys.hpp"
#include "queue/periodic.hpp"
#include "queue/python_json.hpp"
#include "util/clock.hpp"
#include "util/random_token.hpp"
#include "worker/dispatch_fsm.hpp"
#include "worker/executor.hpp"
#include "worker/fetch.hpp"
#include "worker/liveness.hpp"
#include "worker/retention.hpp"
#include "worker/signals.hpp"
#include "worker/topology.hpp"

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

std::string json_text(std::string_view s) {
    return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

struct Worker::State final : detail::CompletionSink {
    State(std::vector<std::string> q, WorkerOptions o)
        : queues(std::move(q)),
          options(std::move(o)),
          conn(options.connection ? *options.connection : global_connection()),
          topology(detail::worker_topology(conn)) {}

    std::vector<std::string> queues;
    WorkerOptions options;
    Connection conn;
    const detail::WorkerTopology& topology;  // single node or cluster, chosen from conn once
    std::string fixed_id;                    // from_id(): the registered id, not ours
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

    /// Claims a heartbeat for this run: `base_id`, or a twin's id when a live
    /// process elsewhere holds that one (added to `claimed`). Returns the id worked as.
    std::string claim_working_id(const std::string& base_id, std::vector<std::string>& claimed,
                                 const std::string& queue_names);

    class Dispatch;
};

namespace {

void validate_queues(const std::vector<std::string>& queues) {
    if (queues.empty()) throw ConfigurationError("retools: no queues were configured for this worker");
    for (const auto& q : queues) detail::validate_queue_name(q);
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
    for (const Reply& r : state_->topology.apply(state_->conn, p)) r.check();
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
    for (const Reply& r : state_->topology.apply(state_->conn, p)) r.check();
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

// One work() call's dispatch loop: performs what its DispatchFsm decides
// (fetching, finishing, beating, recovering, waiting) and reports back.
class Worker::State::Dispatch {
public:
    Dispatch(State& s, std::string wid, const WorkOptions& options, std::string queue_names)
        : s_(s),
          opt_(s.options),
          wid_(std::move(wid)),
          fetch_(s.topology.make_fetch(s.conn, wid_, s.queues)),
          executor_(make_executor(s)),
          fsm_(config(s.options, options), steady::now(), s.conn.master_switches()) {
        if (options.blocking && !options.burst)
            waiter_.emplace(s.conn, s.topology, s.queues,
                            std::max(options.interval, std::chrono::milliseconds(1)), [&s] {
                                {
                                    std::lock_guard lock(s.mutex);
                                    s.queue_ready = true;
                                }
                                s.cv.notify_one();
                            });
        beat_.ttl_ms = opt_.heartbeat_timeout.count();
        beat_.queues = std::move(queue_names);
        beat_.started = detail::python_repr(s.started);
        beat_.threads = opt_.concurrency;
    }

    WorkSummary run() {
        detail::DispatchEvent event = round();
        for (;;) {
            const detail::DispatchAction action = fsm_.resume(event);
            switch (action.kind) {
                case Action::Kind::stop:
                    executor_.reset();  // joins threads / reaps children
                    return fsm_.summary();
                case Action::Kind::poll:
                    break;
                case Action::Kind::pause:
                    pause(action.delay);
                    break;
                case Action::Kind::wait:
                    wait(action);
                    break;
                default:
                    event = perform(action);
                    continue;
            }
            event = round();
        }
    }

private:
    using Action = detail::DispatchAction;
    using Event = detail::DispatchEvent;

    static detail::DispatchConfig config(const WorkerOptions& opt, const WorkOptions& options) {
        return {.concurrency = opt.concurrency,
                .fork_mode = opt.mode == ExecutionMode::fork,
                .prefetch_window = opt.prefetch_window,
                .max_prefetch = opt.max_prefetch,
                .max_jobs = options.max_jobs,
                .burst = options.burst,
                .interval = std::max(options.interval, std::chrono::milliseconds(1)),
                .heartbeat_interval = opt.heartbeat_interval,
                .heartbeat_timeout = opt.heartbeat_timeout,
                .periodic_poll = std::max(opt.periodic_poll, std::chrono::milliseconds(0))};
    }

    static std::unique_ptr<detail::Executor> make_executor(State& s) {
        const auto& opt = s.options;
        detail::ExecutorConfig config;
        config.limits.max_payload_bytes = opt.max_payload_bytes;
        if (opt.job_timeout) config.limits.job_timeout = detail::to_seconds(*opt.job_timeout);
        config.job_timeout = opt.job_timeout;
        return opt.mode == ExecutionMode::fork
                   ? detail::make_fork_executor(s.registry, s.conn, s, config)
                   : detail::make_thread_executor(opt.concurrency, s.registry, s.conn, s, config);
    }

    // A round begins: what was requested and what finished since the last one.
    Event round() {
        detail::DispatchRequests r;
        {
            std::lock_guard lock(s_.mutex);
            done_.swap(s_.completed);
            unstarted_.swap(s_.unstarted);
            s_.queue_ready = false;
            r.stop_now = s_.stop_now;
            r.stop_graceful = s_.stop_graceful;
            r.paused = s_.paused;
            r.kill_children = s_.kill_children;
            s_.kill_children = false;
            control_ = s_.control;
        }
        return {.kind = Event::Kind::woke,
                .now = steady::now(),
                .requests = r,
                .finished = done_,
                .unstarted = unstarted_.size(),
                .master_switches = s_.conn.master_switches()};
    }

    Event perform(const Action& action) {
        switch (action.kind) {
            case Action::Kind::signal_jobs:
                executor_->signal_running(action.signal);
                return {};
            case Action::Kind::check_timeouts:
                return {.kind = Event::Kind::timeouts_checked, .next_check = executor_->enforce_timeouts()};
            case Action::Kind::requeue_unstarted:
                requeue_unstarted(action.delay);
                return {};
            case Action::Kind::finish:
                finish();
                return {};
            case Action::Kind::take_backlog: {
                auto back = executor_->take_backlog();
                // LPUSH one by one: newest first, so the oldest ends at the head.
                for (auto it = back.rbegin(); it != back.rend(); ++it) batch_.requeue(*it);
                return {.kind = Event::Kind::backlog_taken, .count = back.size()};
            }
            case Action::Kind::resync:
                return resync();
            case Action::Kind::recover:
                return recover(action.full_scan);
            case Action::Kind::promote_periodic:
                return promote_periodic();
            case Action::Kind::exchange:
                return exchange(action);
            case Action::Kind::start_jobs:
                executor_->submit_many(taken_);
                taken_.clear();
                return {};
            default:
                return {};  // the loop's own actions never come here
        }
    }

    void requeue_unstarted(std::chrono::milliseconds backoff) {
        // Not run: back at the head of the queue (oldest first), and a pause.
        if (s_.logs(WorkerLog::failures))
            detail::log(LogLevel::warning,
                        fmt::format("retools-worker: {}: {}; {} job(s) requeued, pausing {} ms", wid_,
                                    unstarted_.front().second, unstarted_.size(), backoff.count()));
        for (auto it = unstarted_.rbegin(); it != unstarted_.rend(); ++it) batch_.requeue(it->first);
        unstarted_.clear();
    }

    void finish() {
        const double now = detail::unix_now();
        for (auto& d : done_) {
            const auto& o = d.outcome;
            bool bad = o.status == JobStatus::failed || o.status == JobStatus::retry || o.timed_out;
            if (s_.logs(WorkerLog::jobs) || (bad && s_.logs(WorkerLog::failures)))
                detail::log(bad ? LogLevel::warning : LogLevel::info, fmt::format("retools-worker: job {} {} queue={} {:.3f}ms {}{}{}",
                           o.job_id.empty() ? "-" : o.job_id, o.job_name.empty() ? "-" : o.job_name,
                           d.job.queue(), o.seconds * 1000, status_text(o.status),
                           o.error.empty() ? "" : ": ", o.error));
            batch_.add(std::move(d), wid_, now);
        }
        done_.clear();
    }

    Event resync() {
        try {
            if (std::size_t n =
                    detail::recover_worker(s_.conn, wid_, detail::RecoverMode::resync, 0, false).requeued;
                n && s_.logs(WorkerLog::failures))
                detail::log(LogLevel::warning, fmt::format("retools-worker: {}: requeued {} job(s) taken during a Redis error",
                           wid_, n));
            return {.kind = Event::Kind::resynced};
        } catch (const Error&) {
            return {.kind = Event::Kind::resync_failed};
        }
    }

    Event recover(bool full) {
        try {
            auto r = detail::recover_dead_workers(s_.conn, opt_.heartbeat_timeout, opt_.max_recoveries, full);
            detail::trim_failed(s_.conn, opt_.failed_retention);
            if ((r.requeued || r.quarantined) && s_.logs(WorkerLog::failures))
                detail::log(LogLevel::warning, fmt::format("retools-worker: {}: recovered dead workers' jobs: {} requeued, {} to "
                           "retools:failed",
                           wid_, r.requeued, r.quarantined));
            return {.kind = Event::Kind::scanned};
        } catch (const Error& e) {
            if (s_.logs(WorkerLog::failures))
                detail::log(LogLevel::warning, fmt::format("retools-worker: {}: recovering dead workers failed: {}", wid_,
                           e.what()));
            return {.kind = Event::Kind::scan_failed};
        }
    }

    // Due periodic jobs to their queues; when to look again (the earliest
    // next run; the FSM caps the wait at periodic_poll).
    Event promote_periodic() {
        const auto now = steady::now();
        Event done{.kind = Event::Kind::periodic_checked, .next_check = now + opt_.periodic_poll};
        try {
            const double unix_now = detail::unix_now();
            detail::PeriodicPromotion r = detail::promote_periodic(s_.conn, s_.topology.keys(), unix_now);
            if (r.next_run) {
                // A millisecond late rather than early: the run is then due.
                const auto in = std::chrono::duration<double>(*r.next_run - unix_now + 0.001);
                done.next_check = now + std::chrono::duration_cast<steady::duration>(in);
            }
            if (s_.logs(WorkerLog::jobs) && r.enqueued)
                detail::log(LogLevel::info,
                            fmt::format("retools-worker: {}: enqueued {} periodic job(s)", wid_, r.enqueued));
            for (const auto& problem : r.problems)
                if (s_.logs(WorkerLog::failures) && problem != last_periodic_note_)
                    detail::log(LogLevel::warning, fmt::format("retools-worker: {}: {}", wid_, problem));
            last_periodic_note_ = r.problems.empty() ? std::string() : r.problems.back();
        } catch (const Error& e) {
            if (s_.logs(WorkerLog::failures))
                detail::log(
                    LogLevel::warning,
                    fmt::format("retools-worker: {}: periodic jobs not looked at: {}", wid_, e.what()));
        }
        return done;
    }

    Event exchange(const Action& action) {
        try {
            if (action.beat) beat_.json = s_.heartbeat_json(wid_, action.busy);
            if (action.resend) batch_.append(kept_);
            std::string note = fetch_->exchange(batch_, action.count, action.idle,
                                                action.beat ? &beat_ : nullptr, taken_, &kept_);
            if (!note.empty() && s_.logs(WorkerLog::failures) && note != last_note_)
                detail::log(LogLevel::warning, fmt::format("retools-worker: {}: {}", wid_, note));
            last_note_ = std::move(note);
            batch_.clear();
            return {.kind = Event::Kind::fetched, .count = taken_.size(), .kept = !kept_.empty()};
        } catch (const Error& e) {
            if (s_.logs(WorkerLog::failures))
                detail::log(LogLevel::warning, fmt::format("retools-worker: {}: Redis error, retrying: {}", wid_, e.what()));
            return {.kind = Event::Kind::fetch_failed, .kept = !kept_.empty()};
        }
    }

    // After a Redis error: a pause that a request (stop, pause, a signal) cuts short.
    void pause(std::chrono::milliseconds delay) {
        std::unique_lock lock(s_.mutex);
        s_.cv.wait_for(lock, delay, [&] { return s_.control != control_; });
    }

    void wait(const Action& action) {
        if (action.arm_waiter && waiter_) waiter_->arm();
        std::unique_lock lock(s_.mutex);
        const auto wake_at = std::min(steady::now() + action.interval, action.deadline);
        auto enough = [&](std::size_t pending) { return fsm_.enough(pending); };
        s_.wake_after = action.wake_after;
        // Finished jobs wait for `enough` company at most ack_delay: the
        // first completion wakes us (once) to set that deadline.
        for (;;) {
            auto until = wake_at;
            if (!s_.completed.empty()) until = std::min(until, s_.first_pending + ack_delay);
            s_.ack_watch = s_.completed.empty();
            const bool woken = s_.cv.wait_until(lock, until, [&] {
                return s_.control != control_ || s_.queue_ready || enough(s_.completed.size()) ||
                       (s_.ack_watch && !s_.completed.empty());
            });
            if (!woken || s_.control != control_ || s_.queue_ready || enough(s_.completed.size())) break;
        }
        s_.ack_watch = false;
        s_.wake_after = 1;
    }

    State& s_;
    const WorkerOptions& opt_;
    const std::string wid_;
    std::unique_ptr<detail::ReliableFetch> fetch_;
    std::unique_ptr<detail::Executor> executor_;
    std::optional<detail::QueueWaiter> waiter_;
    detail::FinishBatch batch_;
    // Finish operations a key of the wrong type refused (their jobs wait in
    // the processing list): sent again every 200 ms while fetching goes on.
    detail::FinishBatch kept_;
    std::vector<TakenJob> taken_;
    std::vector<FinishedJob> done_;
    std::vector<std::pair<TakenJob, std::string>> unstarted_;
    std::string last_note_;  // the fetch's last complaint, logged when it changes
    std::string last_periodic_note_;  // likewise for periodic jobs
    detail::Beat beat_;
    std::uint64_t control_ = 0;  // s_.control when the round began: a change is a new request
    detail::DispatchFsm fsm_;
};

std::string Worker::State::claim_working_id(const std::string& base_id, std::vector<std::string>& claimed,
                                            const std::string& queue_names) {
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
            detail::claim_heartbeat(conn, wid, instance, heartbeat_json(wid, 0), options.heartbeat_timeout);
        if (!foreign) return wid;
        if (attempt < 3 && detail::heartbeat_owner_gone(*foreign, instance)) {
            detail::recover_worker(conn, wid, detail::RecoverMode::dead, options.max_recoveries, false,
                                   *foreign);
            continue;
        }
        wid = fmt::format("{}~{}:{}:{}", detail::hostname(), instance.substr(0, 8), ::getpid(), queue_names);
        if (!detail::claim_worker_id(wid))
            throw ConfigurationError(
                fmt::format("retools: worker '{}' is already working in this process", wid));
        claimed.push_back(wid);
        working_id = &keep_id(wid);
        if (logs(WorkerLog::failures))
            detail::log(LogLevel::warning,
                        fmt::format("retools-worker: {} is held by another live process; working as {}",
                                    base_id, wid));
    }
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
    const std::string wid = s.claim_working_id(base_id, release.ids, queue_names());

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

    std::optional<detail::SignalWatcher> signals;
    if (opt.handle_signals) signals.emplace([&s](int sig) { s.on_signal(sig); });

    // Start-up, as the original plus recovery: our own leftovers (a previous
    // process with our id), then every dead worker's jobs, on any host.
    detail::recover_worker(s.conn, wid, detail::RecoverMode::own, opt.max_recoveries, false);
    detail::prune_dead_workers(s.conn, opt.max_recoveries);
    detail::recover_dead_workers(s.conn, opt.heartbeat_timeout, opt.max_recoveries, true);
    detail::trim_failed(s.conn, opt.failed_retention);
    register_worker();

    const WorkSummary summary = State::Dispatch(s, wid, options, queue_names()).run();
    signals.reset();
    try {
        // Jobs still held (kept for a key of the wrong type) stay registered
        // to us; our heartbeat then expires and another worker recovers them.
        if (s.topology.processing_lists(s.conn, wid, s.queues) == 0) unregister_worker(wid);
    } catch (const Error& e) {
        if (s.logs(WorkerLog::failures))
            detail::log(LogLevel::warning,
                        fmt::format("retools-worker: {}: could not unregister: {}", wid, e.what()));
    }
    return summary;
}

}  // namespace retools
