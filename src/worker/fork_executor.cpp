// Fork mode: every job runs in a child process, like the original. The child
// reports its outcome through a pipe; a child that dies without reporting
// (crash, abort, kill, exit) fails its job with the exit status as the error.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "util/clock.hpp"
#include "worker/executor.hpp"
#include "worker/signals.hpp"

namespace retools::detail {

namespace {

// Outcome wire format: status byte, then length-prefixed fields.
void put_string(std::string& out, std::string_view s) {
    auto n = static_cast<std::uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    out.append(s);
}
template <class T>
void put_raw(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string encode(const JobOutcome& o) {
    std::string out;
    out.push_back(static_cast<char>(o.status));
    for (const std::string* s : {&o.job_id, &o.job_name, &o.error, &o.result, &o.retry_member})
        put_string(out, *s);
    put_raw(out, o.result_ttl);
    put_raw(out, o.retry_at);
    put_raw(out, o.seconds);
    return out;
}

bool decode(std::string_view in, JobOutcome& o) {
    if (in.empty()) return false;
    auto status = static_cast<unsigned char>(in[0]);
    if (status > static_cast<unsigned char>(JobStatus::requeue)) return false;
    o.status = static_cast<JobStatus>(status);
    in.remove_prefix(1);
    auto get_string = [&](std::string& s) {
        std::uint32_t n;
        if (in.size() < sizeof n) return false;
        std::memcpy(&n, in.data(), sizeof n);
        in.remove_prefix(sizeof n);
        if (in.size() < n) return false;
        s.assign(in.substr(0, n));
        in.remove_prefix(n);
        return true;
    };
    auto get_raw = [&](auto& v) {
        if (in.size() < sizeof v) return false;
        std::memcpy(&v, in.data(), sizeof v);
        in.remove_prefix(sizeof v);
        return true;
    };
    return get_string(o.job_id) && get_string(o.job_name) && get_string(o.error) && get_string(o.result) &&
           get_string(o.retry_member) && get_raw(o.result_ttl) && get_raw(o.retry_at) && get_raw(o.seconds) &&
           in.empty();
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

std::string describe_status(int status) {
    if (WIFSIGNALED(status))
        return fmt::format("job process killed by signal {} ({})", WTERMSIG(status),
                           ::strsignal(WTERMSIG(status)));
    if (WIFEXITED(status))
        return fmt::format("job process exited with status {} before reporting", WEXITSTATUS(status));
    return fmt::format("job process ended with wait status {}", status);
}

class ForkExecutor final : public Executor {
public:
    ForkExecutor(const JobRegistry& registry, const Connection& conn, CompletionSink& sink,
                 const ExecutorConfig& config)
        : registry_(registry), conn_(conn), sink_(sink), config_(config) {}

    ~ForkExecutor() override {
        signal_running(SIGKILL);
        drain();
    }

    void submit(TakenJob job) override {
        join_finished();  // an exited thread keeps its stack mapped until joined, and fork copies mappings
        // A pipe or fork that fails (EAGAIN under a pids limit, ENOMEM) is
        // transient: the job was not run, and goes back to its queue's head
        // while the worker backs off, rather than failing (which would drain
        // whole queues into retools:failed in milliseconds).
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            sink_.not_started(std::move(job), fmt::format("cannot create a pipe for the job process: {}",
                                                          std::strerror(errno)));
            return;
        }
        std::fflush(nullptr);  // the child must not flush the parent's buffered output again
        const pid_t parent = ::getpid();
        pid_t pid = ::fork();
        if (pid < 0) {
            int e = errno;
            ::close(fds[0]);
            ::close(fds[1]);
            sink_.not_started(std::move(job),
                              fmt::format("cannot fork the job process: {}", std::strerror(e)));
            return;
        }
        if (pid == 0) {
            // Child: dies with the worker (a restarted worker would run its job
            // again while it still ran); the check after the prctl covers a parent
            // that died before it. Default signal dispositions (TERM kills it),
            // run, report, leave without running the parent's atexit handlers or
            // static destructors.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(1);
            reset_worker_signals();
            ::close(fds[0]);
            JobOutcome outcome = perform_job(job, registry_, conn_, config_.limits);
            write_all(fds[1], encode(outcome));
            std::fflush(nullptr);
            ::_exit(0);
        }
        ::close(fds[1]);
        auto held = std::make_shared<TakenJob>(std::move(job));
        std::unique_lock lock(mutex_);
        Child& child = running_[pid];
        if (config_.job_timeout) child.deadline = std::chrono::steady_clock::now() + *config_.job_timeout;
        try {
            child.thread = std::thread([this, pid, fd = fds[0], held] { reap(pid, fd, std::move(*held)); });
        } catch (const std::system_error& e) {
            // No thread to reap it (a pids limit counts threads too): undo the fork.
            running_.erase(pid);
            lock.unlock();
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
            ::close(fds[0]);
            sink_.not_started(std::move(*held),
                              fmt::format("cannot start a thread for the job process: {}", e.what()));
        }
    }

    std::chrono::steady_clock::time_point enforce_timeouts() override {
        using clock = std::chrono::steady_clock;
        auto next = clock::time_point::max();
        if (!config_.job_timeout) return next;
        // TERM at the deadline; KILL if the child still runs a grace period later.
        const auto grace = std::min<clock::duration>(std::chrono::seconds(5), *config_.job_timeout);
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        for (auto& [pid, child] : running_) {
            if (!child.timed_out && now >= child.deadline) {
                child.timed_out = true;
                child.deadline = now + grace;
                ::kill(pid, SIGTERM);
            } else if (child.timed_out && !child.killed && now >= child.deadline) {
                child.killed = true;
                ::kill(pid, SIGKILL);
            }
            if (!child.killed) next = std::min(next, child.deadline);
        }
        return next;
    }

    std::vector<TakenJob> take_backlog() override { return {}; }

    void signal_running(int sig) override {
        std::lock_guard lock(mutex_);
        for (auto& [pid, child] : running_) ::kill(pid, sig);
    }

    void drain() override {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return running_.empty(); });
        for (auto& t : finished_) t.join();
        finished_.clear();
    }

private:
    void reap(pid_t pid, int fd, TakenJob taken) {
        std::string message;
        char buf[4096];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n > 0) {
                message.append(buf, static_cast<std::size_t>(n));
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                break;
            }
        }
        ::close(fd);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        bool timed_out;
        {
            std::lock_guard lock(mutex_);
            timed_out = running_[pid].timed_out;
        }
        FinishedJob done{std::move(taken), {}};
        if (timed_out) {
            done.outcome.seconds = to_seconds(*config_.job_timeout);
            done.outcome.timed_out = true;
            fail_outcome(done.outcome, done.job,
                         fmt::format("job timed out after {:g} s", to_seconds(*config_.job_timeout)), conn_);
        } else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0 && decode(message, done.outcome))) {
            done.outcome = {};
            done.outcome.status = JobStatus::failed;
            done.outcome.error = describe_status(status);
            if (WIFSIGNALED(status)) done.outcome.killed_by = WTERMSIG(status);
        }
        sink_.complete(std::move(done));
        std::lock_guard lock(mutex_);
        auto it = running_.find(pid);
        if (it != running_.end()) {
            finished_.push_back(std::move(it->second.thread));  // joined later: a thread cannot join itself
            running_.erase(it);
        }
        cv_.notify_all();
    }

    void join_finished() {
        std::vector<std::thread> done;
        {
            std::lock_guard lock(mutex_);
            done.swap(finished_);
        }
        for (auto& t : done) t.join();
    }

    struct Child {
        std::thread thread;
        std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
        bool timed_out = false;  // TERM sent for the timeout
        bool killed = false;     // KILL sent
    };

    const JobRegistry& registry_;
    Connection conn_;
    CompletionSink& sink_;
    const ExecutorConfig config_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<pid_t, Child> running_;
    std::vector<std::thread> finished_;
};

}  // namespace

std::unique_ptr<Executor> make_fork_executor(const JobRegistry& registry, const Connection& conn,
                                             CompletionSink& sink, const ExecutorConfig& config) {
    return std::make_unique<ForkExecutor>(registry, conn, sink, config);
}

}  // namespace retools::detail
