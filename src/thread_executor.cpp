// Thread mode: a fixed pool of threads runs jobs in-process.

#include <algorithm>
#include <deque>

#include "worker_internal.hpp"

namespace retools::detail {

namespace {

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
        {
            std::lock_guard lock(mutex_);
            backlog_.push_back(std::move(job));
        }
        cv_.notify_one();
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
    void run() {
        std::vector<FinishedJob> mine;
        std::unique_lock lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return stop_ || !backlog_.empty(); });
            if (backlog_.empty()) return;  // stop_
            // With a deep backlog (short jobs), take a few at once: one lock and
            // one report per few jobs instead of per job.
            std::size_t take = std::clamp<std::size_t>(backlog_.size() / (2 * count_), 1, 16);
            for (std::size_t i = 0; i < take; ++i) {
                mine.push_back(FinishedJob{std::move(backlog_.front()), {}});
                backlog_.pop_front();
            }
            running_ += take;
            lock.unlock();
            for (auto& done : mine) done.outcome = perform_job(done.job, registry_, conn_);
            sink_.complete_many(mine);
            lock.lock();
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
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<Executor> make_thread_executor(std::size_t threads, const JobRegistry& registry,
                                               const Connection& conn, CompletionSink& sink) {
    return std::make_unique<ThreadExecutor>(threads, registry, conn, sink);
}

}  // namespace retools::detail
