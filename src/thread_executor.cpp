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
#include <deque>

#include "worker_internal.hpp"

namespace retools::detail {

namespace {

using namespace std::chrono_literals;

// Wake another thread when the awake ones would need longer than this to drain
// the backlog.
constexpr double drain_target_seconds = 0.001;
// A standby thread watches a backlog nobody is taking from (the awake threads
// stuck in jobs longer than their average) and takes it after this long.
constexpr auto stall_timeout = 5ms;
constexpr std::size_t max_take = 16;

class ThreadExecutor final : public Executor {
public:
    ThreadExecutor(std::size_t threads, const JobRegistry& registry, const Connection& conn, CompletionSink& sink)
        : registry_(registry), conn_(conn), sink_(sink), count_(threads) {
        threads_.reserve(threads);
        for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
    }

    ~ThreadExecutor() override {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }

    void submit(TakenJob job) override {
        std::vector<TakenJob> one;
        one.push_back(std::move(job));
        submit_many(one);
    }

    void submit_many(std::vector<TakenJob>& jobs) override {
        if (jobs.empty()) return;
        std::size_t wake;
        {
            std::lock_guard lock(mutex_);
            for (auto& job : jobs) backlog_.push_back(std::move(job));
            wake = wakes_for_backlog();
        }
        notify(wake);
    }

    std::vector<TakenJob> take_backlog() override {
        std::lock_guard lock(mutex_);
        std::vector<TakenJob> out(std::make_move_iterator(backlog_.begin()), std::make_move_iterator(backlog_.end()));
        backlog_.clear();
        return out;
    }

    void signal_running(int) override {}  // threads cannot be killed safely

    void drain() override {
        std::unique_lock lock(mutex_);
        idle_cv_.wait(lock, [&] { return backlog_.empty() && running_ == 0; });
    }

private:
    // How many sleeping threads to wake for the current backlog; reserves them
    // (a wake token each) so concurrent callers do not wake the same ones twice.
    std::size_t reserve_wakes() {
        const std::size_t available = sleeping_ - wakes_;
        const double backlog = static_cast<double>(backlog_.size());
        std::size_t n = 0;
        while (n < available) {
            const auto awake = static_cast<double>(count_ - (available - n));
            const bool more = awake == 0 ||
                              (avg_seconds_ < 0 ? backlog > awake : backlog * avg_seconds_ > drain_target_seconds * awake);
            if (!more) break;
            ++n;
        }
        wakes_ += n;
        return n;
    }

    // reserve_wakes(), plus a standby when the backlog is left to the threads
    // awake: it makes sure they get to it even if they are stuck in jobs
    // longer than the average. Returns the threads to notify.
    std::size_t wakes_for_backlog() {
        if (backlog_.empty()) return 0;
        std::size_t n = reserve_wakes();
        if (!standby_ && !watch_ && sleeping_ > wakes_) {
            watch_ = true;
            ++n;
        }
        return n;
    }

    void notify(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) cv_.notify_one();
    }

    // Blocks until this thread is given work (a wake token), the backlog
    // stalls while it is on standby, or the executor stops.
    void sleep(std::unique_lock<std::mutex>& lock) {
        ++sleeping_;
        bool standby = false;
        std::uint64_t seen = 0;
        for (;;) {
            if (stop_) break;
            if (wakes_ > 0) {
                --wakes_;
                break;
            }
            if (watch_ && !standby_) {
                watch_ = false;
                standby = standby_ = true;
                seen = started_;
            }
            if (standby && backlog_.empty()) standby = standby_ = false;
            if (!standby) {
                cv_.wait(lock);
                continue;
            }
            if (cv_.wait_for(lock, stall_timeout) == std::cv_status::timeout) {
                if (!backlog_.empty() && started_ == seen) break;  // nobody took any: take it
                seen = started_;
            }
        }
        if (standby) standby_ = false;
        --sleeping_;
    }

    void run() {
        std::vector<FinishedJob> mine;
        std::unique_lock lock(mutex_);
        for (;;) {
            if (backlog_.empty()) {
                if (stop_) return;
                sleep(lock);
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
            const std::size_t wake = wakes_for_backlog();
            lock.unlock();
            notify(wake);
            for (auto& done : mine) done.outcome = perform_job(done.job, registry_, conn_);
            double spent = 0;
            for (const auto& done : mine) spent += done.outcome.seconds;
            sink_.complete_many(mine);
            lock.lock();
            const double avg = spent / static_cast<double>(take);
            avg_seconds_ = avg_seconds_ < 0 ? avg : 0.8 * avg_seconds_ + 0.2 * avg;
            running_ -= take;
            if (running_ == 0 && backlog_.empty()) idle_cv_.notify_all();
        }
    }

    const JobRegistry& registry_;
    Connection conn_;
    CompletionSink& sink_;
    const std::size_t count_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::condition_variable idle_cv_;
    std::deque<TakenJob> backlog_;
    std::size_t running_ = 0;
    std::size_t sleeping_ = 0;       // threads in sleep()
    std::size_t wakes_ = 0;          // wake tokens not yet taken by a sleeping thread
    std::uint64_t started_ = 0;      // jobs taken from the backlog, ever
    double avg_seconds_ = -1;        // running average of job durations; < 0: none yet
    bool watch_ = false;             // a sleeping thread is asked to become the standby
    bool standby_ = false;           // a thread is on standby
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<Executor> make_thread_executor(std::size_t threads, const JobRegistry& registry,
                                               const Connection& conn, CompletionSink& sink) {
    return std::make_unique<ThreadExecutor>(threads, registry, conn, sink);
}

}  // namespace retools::detail
