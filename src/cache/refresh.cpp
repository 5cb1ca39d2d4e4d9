#include "cache/refresh.hpp"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace retools::detail {
namespace {

struct Executor {
    std::mutex mutex;
    std::condition_variable work;
    std::condition_variable idle;
    std::deque<std::pair<std::string, std::function<void()>>> queue;
    std::set<std::string> keys;  // queued or running
    std::size_t running = 0;

    Executor() {
        for (std::size_t i = 0; i < refresh_threads; ++i) std::thread([this] { run(); }).detach();
    }

    void run() {
        std::unique_lock guard(mutex);
        for (;;) {
            work.wait(guard, [this] { return !queue.empty(); });
            auto [key, task] = std::move(queue.front());
            queue.pop_front();
            ++running;
            guard.unlock();
            try {
                task();
            } catch (...) {
                // An early refresh is an optimization: the next read on expiry recomputes.
            }
            task = nullptr;  // destroy captured state outside the lock
            guard.lock();
            --running;
            keys.erase(key);
            if (queue.empty() && running == 0) idle.notify_all();
        }
    }
};

std::mutex executor_mutex;
Executor* executor = nullptr;  // never destroyed: its threads may outlive main()
pid_t executor_pid = 0;

Executor& shared_executor() {
    std::lock_guard guard(executor_mutex);
    if (!executor || executor_pid != ::getpid()) {
        // First use, or a forked child: the parent's threads do not exist here
        // and its executor's state is not ours; leave it and start anew.
        executor = new Executor();
        executor_pid = ::getpid();
    }
    return *executor;
}

}  // namespace

bool submit_refresh(const std::string& key, std::function<void()> task) {
    Executor& e = shared_executor();
    {
        std::lock_guard guard(e.mutex);
        if (e.queue.size() >= refresh_queue_limit || !e.keys.insert(key).second) return false;
        e.queue.emplace_back(key, std::move(task));
    }
    e.work.notify_one();
    return true;
}

bool refreshes_idle(long within_ms) {
    Executor& e = shared_executor();
    std::unique_lock guard(e.mutex);
    return e.idle.wait_for(guard, std::chrono::milliseconds(within_ms),
                           [&] { return e.queue.empty() && e.running == 0; });
}

}  // namespace retools::detail
