// Thread mode: a fixed pool of threads runs jobs in-process.
//
// Waking a thread costs two context switches, and on a machine with fewer
// cores than threads, every extra thread awake for short jobs only adds lock
// contention and preemption. So threads are not woken per job: a thread that
// finishes its batch keeps taking from the backlog, and a sleeping one is woken
// only when the threads already awake would take too long to drain the backlog
// (judged from the average job duration; with no average yet, one job per
// thread). Jobs that block (I/O, sleeps) thus still get every thread at once,
// while no-op jobs run on one or two.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "worker/executor.hpp"

namespace retools::detail {

namespace {

using namespace std::chrono_literals;

// Wake another thread when the awake ones would need longer than this to drain
// the backlog.
constexpr double drain_target_seconds = 0.002;
// A standby thread watches a backlog nobody is taking from (the awake threads
// stuck in jobs longer than their average) and takes it after this long.
constexpr auto stall_timeout = 5ms;
constexpr std::size_t max_take = 16;
// A thread running a batch reports what finished once the batch has taken this long.
constexpr auto report_after = 1ms;

class ThreadExecutor final : public Executor {
public:
    ThreadExecutor(std::size_t threads, const JobRegistry& registry, const Connection& conn,
                   CompletionSink& sink, const ExecutorConfig& config)
        : registry_(registry), conn_(conn), sink_(sink), limits_(config.limits), count_(threads) {
        // Reserved here: an executor thread that never runs a job never
        // allocates, so glibc never gives it a malloc arena of its own.
        idle_.reserve(threads);
        sleepers_.reserve(threads);
        threads_.reserve(threads);
        for (std::size_t i = 0; i < threads; ++i) sleepers_.push_back(std::make_unique<Sleeper>());
        for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this, i] { run(*sleepers_[i]); });
    }

    ~ThreadExecutor() override {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
            for (auto& s : sleepers_) s->cv.notify_one();
        }
        for (auto& t : threads_) t.join();
    }

    void submit(TakenJob job) override {
        std::lock_guard lock(mutex_);
        backlog_.push_back(std::move(job));
        wake_for_backlog();
    }

    void submit_many(std::vector<TakenJob>& jobs) override {
        if (jobs.empty()) return;
        std::lock_guard lock(mutex_);
        for (auto& job : jobs) backlog_.push_back(std::move(job));
        wake_for_backlog();
    }

    std::vector<TakenJob> take_backlog() override {
        std::lock_guard lock(mutex_);
        std::vector<TakenJob> out(std::make_move_iterator(backlog_.begin()),
                                  std::make_move_iterator(backlog_.end()));
        backlog_.clear();
        return out;
    }

    void signal_running(int) override {}  // threads cannot be killed safely

    void drain() override {
        std::unique_lock lock(mutex_);
        idle_cv_.wait(lock, [&] { return backlog_.empty() && running_ == 0; });
    }

private:
    // One per thread, so a waker picks which thread wakes: the most recently
    // idle one (warm caches; the others stay asleep and allocate nothing).
    struct Sleeper {
        std::condition_variable cv;
        enum class Wake : unsigned char { none, work, watch } wake = Wake::none;
    };

    // Wakes idle threads while the awake ones would need too long to drain the
    // backlog; if some of it is left to the awake threads, makes one idle
    // thread the standby, which takes it should they be stuck in jobs longer
    // than the average. Called with the lock held.
    void wake_for_backlog() {
        const double backlog = static_cast<double>(backlog_.size());
        while (!idle_.empty() && backlog > 0) {
            const auto awake = static_cast<double>(count_ - idle_.size() - (standby_ ? 1 : 0));
            const bool more =
                awake == 0 ||
                (avg_seconds_ < 0 ? backlog > awake : backlog * avg_seconds_ > drain_target_seconds * awake);
            if (!more) break;
            pop_idle(Sleeper::Wake::work);
        }
        if (backlog > 0 && !standby_ && !idle_.empty()) standby_ = pop_idle(Sleeper::Wake::watch);
    }

    Sleeper* pop_idle(Sleeper::Wake why) {
        Sleeper* s = idle_.back();
        idle_.pop_back();
        s->wake = why;
        s->cv.notify_one();
        return s;
    }

    // Blocks until this thread is given work, or, on standby, the backlog
    // stalls, or the executor stops. Returns false when stopped with nothing
    // left to run (jobs still in the backlog are run, as on a busy thread).
    bool sleep(std::unique_lock<std::mutex>& lock, Sleeper& me) {
        me.wake = Sleeper::Wake::none;
        idle_.push_back(&me);
        for (;;) {
            if (stop_) break;
            if (me.wake == Sleeper::Wake::work) return true;
            if (me.wake == Sleeper::Wake::none) {
                me.cv.wait(lock);
                continue;
            }
            // Standby: watch the backlog while the awake threads work on it.
            std::uint64_t seen = started_;
            me.cv.wait_for(lock, stall_timeout);
            if (stop_) break;
            if (me.wake == Sleeper::Wake::work) return true;  // woken for work meanwhile
            if (!backlog_.empty() && started_ != seen) continue;
            standby_ = nullptr;
            if (!backlog_.empty()) return true;  // nobody took any: take it
            me.wake = Sleeper::Wake::none;       // drained: idle again
            idle_.push_back(&me);
        }
        if (standby_ == &me) standby_ = nullptr;
        std::erase(idle_, &me);
        return !backlog_.empty();
    }

    void run(Sleeper& me) {
        std::vector<FinishedJob> mine, ready;
        std::unique_lock lock(mutex_);
        for (;;) {
            if (backlog_.empty()) {
                if (stop_ || !sleep(lock, me)) return;
                continue;
            }
            // With a deep backlog (short jobs), take a few at once: one lock and
            // one report per few jobs instead of per job. Sized by the pool, not
            // by the threads awake: a batch runs on one thread, so a big one would
            // serialise jobs that turn out slow.
            const std::size_t take = std::clamp<std::size_t>(backlog_.size() / (2 * count_), 1, max_take);
            for (std::size_t i = 0; i < take; ++i) {
                mine.push_back(FinishedJob{std::move(backlog_.front()), {}});
                backlog_.pop_front();
            }
            running_ += take;
            started_ += take;
            if (!backlog_.empty()) wake_for_backlog();
            lock.unlock();
            // Jobs are reported as a batch, except when the batch turns slow:
            // then what finished is reported at once, so a fast job never
            // waits in the processing list (result unstored) for a slow one.
            double spent = 0;
            std::size_t reported = 0;
            auto batch_start = std::chrono::steady_clock::now();
            for (std::size_t k = 0; k < mine.size(); ++k) {
                mine[k].outcome = perform_job(mine[k].job, registry_, conn_, limits_);
                spent += mine[k].outcome.seconds;
                if (k + 1 < mine.size() && std::chrono::steady_clock::now() - batch_start > report_after) {
                    ready.assign(
                        std::make_move_iterator(mine.begin() + static_cast<std::ptrdiff_t>(reported)),
                        std::make_move_iterator(mine.begin() + static_cast<std::ptrdiff_t>(k + 1)));
                    sink_.complete_many(ready);
                    reported = k + 1;
                    batch_start = std::chrono::steady_clock::now();
                }
            }
            if (reported == 0) {
                sink_.complete_many(mine);
            } else {
                ready.assign(std::make_move_iterator(mine.begin() + static_cast<std::ptrdiff_t>(reported)),
                             std::make_move_iterator(mine.end()));
                mine.clear();
                if (!ready.empty()) sink_.complete_many(ready);
            }
            lock.lock();
            // A job preempted on a busy machine looks slow: a sample counts for at
            // most 2× the average (+20% per batch), so a few outliers do not wake
            // more threads (each would then keep a malloc arena); a real shift to
            // slow jobs shows within some dozens of batches, and meanwhile the
            // standby keeps the backlog moving.
            const double avg = spent / static_cast<double>(take);
            avg_seconds_ =
                avg_seconds_ < 0 ? avg : 0.8 * avg_seconds_ + 0.2 * std::min(avg, 2 * avg_seconds_);
            running_ -= take;
            if (running_ == 0 && backlog_.empty()) idle_cv_.notify_all();
        }
    }

    const JobRegistry& registry_;
    Connection conn_;
    CompletionSink& sink_;
    const PerformLimits limits_;
    const std::size_t count_;
    std::mutex mutex_;
    std::condition_variable idle_cv_;
    std::deque<TakenJob> backlog_;
    std::size_t running_ = 0;
    std::vector<std::unique_ptr<Sleeper>> sleepers_;
    std::vector<Sleeper*> idle_;  // threads asleep, the most recently idle last
    Sleeper* standby_ = nullptr;  // the thread on standby, if any
    std::uint64_t started_ = 0;   // jobs taken from the backlog, ever
    double avg_seconds_ = -1;     // running average of job durations; < 0: none yet
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<Executor> make_thread_executor(std::size_t threads, const JobRegistry& registry,
                                               const Connection& conn, CompletionSink& sink,
                                               const ExecutorConfig& config) {
    return std::make_unique<ThreadExecutor>(threads, registry, conn, sink, config);
}

}  // namespace retools::detail
