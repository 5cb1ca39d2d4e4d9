#include "lock/watchdog.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "client/connection_access.hpp"
#include "lock/scripts.hpp"

namespace retools {
namespace detail {

using SteadyClock = std::chrono::steady_clock;
using Due = SteadyClock::time_point;

/// How long the renewal thread outlives the last renewal (it ends between 1
/// and 2 times this after it): sequential acquisitions, e.g. cache misses,
/// reuse it instead of starting and stopping a thread each (each start and
/// stop waits for the scheduler: a large part of a miss on a busy machine).
/// A fork() ends an idle thread first (see before_fork), so a process that
/// forks between locks still forks single-threaded.
constexpr std::chrono::milliseconds renewer_linger{1000};

/// One auto-renewing acquisition. `lost` is read by the Lock without the
/// renewer's mutex; everything else is guarded by it.
struct Renewal {
    Connection conn;
    std::string key;
    std::string token;
    std::chrono::milliseconds ttl;
    const Script* extend = nullptr;
    std::atomic<bool> lost{false};
    bool cancelled = false;
    bool scheduled = false;
    std::multimap<Due, std::shared_ptr<Renewal>>::iterator slot;
};

/// The process's renewal thread and its timetable. The renewals due at one
/// moment go out together, one pipelined round trip per server, so holding
/// hundreds of locks costs one round trip per tick, not hundreds. A lock
/// tolerates two missed ticks (ticks every ttl/3), so a slow server delays a
/// renewal without losing the lock unless it stalls for most of a TTL.
class Renewer {
public:
    Renewer() : pid_(static_cast<long>(::getpid())) {}
    Renewer(const Renewer&) = delete;
    Renewer& operator=(const Renewer&) = delete;
    ~Renewer() {
        {
            std::lock_guard guard(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    /// The renewer of this process, started on first use. A forked child gets
    /// a new one: the parent's thread does not exist there, and its copy is
    /// leaked, never destroyed (its mutex and condition variable may be in
    /// any state).
    static std::shared_ptr<Renewer> of_this_process() {
        static const int registered = ::pthread_atfork(&Renewer::before_fork, nullptr, nullptr);
        (void)registered;
        const auto pid = static_cast<long>(::getpid());
        std::lock_guard guard(registry_mutex());
        std::shared_ptr<Renewer>& current = registry();
        if (current && current->pid_ != pid) {
            new std::shared_ptr<Renewer>(std::move(current));  // leaked on purpose
            current.reset();
        }
        if (!current) current = std::make_shared<Renewer>();
        return current;
    }

    void add(const std::shared_ptr<Renewal>& renewal) {
        bool wake = false;
        {
            std::lock_guard guard(mutex_);
            const Due due = SteadyClock::now() + interval(*renewal);
            const bool earliest = schedule(renewal, due);
            if (!running_) {
                running_ = true;
                thread_ = std::thread([this, epoch = ++epoch_] { run(epoch); });  // reads the timetable first
            } else {
                // The thread wakes within renewer_linger anyway: a wake-up (a
                // scheduling delay for a cache miss on a busy machine) only
                // for a renewal due before that.
                wake = earliest && due < SteadyClock::now() + renewer_linger;
            }
        }
        if (wake) wake_.notify_one();
    }

    void cancel(Renewal& renewal) {
        {
            std::lock_guard guard(mutex_);
            renewal.cancelled = true;
            if (renewal.scheduled) {
                due_.erase(renewal.slot);  // drops the timetable's reference
                renewal.scheduled = false;
            }
            // A renewal running right now may still extend the key once; that is
            // harmless: the extend script only touches a key that holds our token.
            // With nothing held the thread lingers, then ends (see run); a
            // fork() ends it at once (before_fork).
        }
    }

private:
    // The process's renewer (reset in a forked child by of_this_process).
    static std::mutex& registry_mutex() {
        static auto* mutex = new std::mutex;  // never destroyed: fork handlers may run during exit
        return *mutex;
    }
    static std::shared_ptr<Renewer>& registry() {
        static std::shared_ptr<Renewer> current;
        return current;
    }

    // pthread_atfork: an idle, lingering thread ends before the fork, so that
    // a process forking between locks is single-threaded as it forks.
    static void before_fork() noexcept {
        std::shared_ptr<Renewer> renewer;
        {
            std::lock_guard guard(registry_mutex());
            renewer = registry();
        }
        if (renewer && renewer->pid_ == static_cast<long>(::getpid())) renewer->retire_if_idle();
    }

    void retire_if_idle() noexcept {
        std::thread retired;
        {
            std::lock_guard guard(mutex_);
            if (!due_.empty() || !running_ || in_flight_) return;
            running_ = false;
            ++epoch_;
            retired = std::move(thread_);
        }
        wake_.notify_all();
        if (retired.joinable()) retired.join();
    }

    static std::chrono::milliseconds interval(const Renewal& r) {
        return std::max(r.ttl / 3, std::chrono::milliseconds{1});
    }

    // Under mutex_; returns whether it became the earliest entry.
    bool schedule(const std::shared_ptr<Renewal>& renewal, Due when) {
        renewal->slot = due_.emplace(when, renewal);
        renewal->scheduled = true;
        return renewal->slot == due_.begin();
    }

    void run(std::uint64_t epoch) {
        std::unique_lock guard(mutex_);
        Due busy_at = SteadyClock::now();  // when a renewal was last scheduled
        while (!stopping_ && epoch == epoch_) {
            if (due_.empty()) {
                if (SteadyClock::now() - busy_at < renewer_linger) {
                    // Linger: the next acquisition reuses this thread.
                    wake_.wait_until(guard, busy_at + renewer_linger);
                    continue;
                }
                // Idle for renewer_linger: end, and detach, as nobody will
                // join this thread.
                running_ = false;
                ++epoch_;
                thread_.detach();
                return;
            }
            busy_at = SteadyClock::now();
            auto next = due_.begin();
            if (const Due when = next->first; when > busy_at) {
                // A copy: cancel() may erase the entry while we wait. Woken at
                // least every renewer_linger, to notice when nothing is held.
                wake_.wait_until(guard, std::min(when, busy_at + renewer_linger));
                continue;
            }
            // Everything due now, or within a quarter of its interval, goes in
            // one batch: one pipelined round trip per server for locks taken
            // around the same time. Renewing a little early is harmless.
            std::vector<std::shared_ptr<Renewal>> batch;
            const Due now = SteadyClock::now();
            while (!due_.empty() && due_.begin()->first - interval(*due_.begin()->second) / 4 <= now) {
                batch.push_back(std::move(due_.begin()->second));
                due_.erase(due_.begin());
                batch.back()->scheduled = false;
            }
            in_flight_ = true;
            guard.unlock();
            const std::vector<Outcome> outcomes = renew(batch);
            guard.lock();
            in_flight_ = false;
            for (std::size_t i = 0; i < batch.size(); ++i) {
                if (outcomes[i] == Outcome::lost)
                    batch[i]->lost.store(true, std::memory_order_release);
                else if (!batch[i]->cancelled)
                    schedule(batch[i], SteadyClock::now() + interval(*batch[i]));
            }
        }
    }

    enum class Outcome { renewed, lost, unknown };

    // Renews every lock of the batch: one pipeline per Connection. An
    // unreachable server leaves its locks `unknown`: they are tried again next
    // tick, and a key outlives two missed ticks.
    static std::vector<Outcome> renew(const std::vector<std::shared_ptr<Renewal>>& batch) {
        std::vector<Outcome> outcomes(batch.size(), Outcome::unknown);
        std::vector<bool> done(batch.size(), false);
        for (std::size_t first = 0; first < batch.size(); ++first) {
            if (done[first]) continue;
            const auto* pool = &ConnectionAccess::impl(batch[first]->conn);
            std::vector<std::size_t> members;
            Pipeline pipeline;
            for (std::size_t i = first; i < batch.size(); ++i) {
                if (done[i] || &ConnectionAccess::impl(batch[i]->conn) != pool) continue;
                done[i] = true;
                members.push_back(i);
                const Renewal& r = *batch[i];
                pipeline.command("EVALSHA", r.extend->sha(), 1, r.key, r.token, r.ttl.count());
            }
            renew_on_one_server(batch, members, pipeline, outcomes);
        }
        return outcomes;
    }

    static void renew_on_one_server(const std::vector<std::shared_ptr<Renewal>>& batch,
                                    const std::vector<std::size_t>& members, const Pipeline& pipeline,
                                    std::vector<Outcome>& outcomes) {
        try {
            const std::vector<Reply> replies = batch[members.front()]->conn.execute(pipeline);
            for (std::size_t j = 0; j < members.size(); ++j) {
                const Renewal& r = *batch[members[j]];
                Reply reply = replies[j];
                // A server that lost its script cache (restart, failover): EVAL once.
                if (reply.is_error()) reply = (*r.extend)(r.conn, {r.key}, r.token, r.ttl.count());
                outcomes[members[j]] = reply.as_integer() == 1 ? Outcome::renewed : Outcome::lost;
            }
        } catch (const std::exception&) {
            // Unreachable server: the rest of this batch stays `unknown`.
        }
    }

    long pid_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool running_ = false;     // thread_ serves the timetable
    bool in_flight_ = false;   // a renewal is running outside the mutex
    std::uint64_t epoch_ = 0;  // the serving thread's; a thread of an older epoch ends
    std::multimap<Due, std::shared_ptr<Renewal>> due_;
    std::thread thread_;  // started by add() when idle, ends when nothing is scheduled
};

Watchdog::Watchdog(Connection conn, std::string key, std::string token, std::chrono::milliseconds ttl,
                   const Script& extend)
    : renewer_(Renewer::of_this_process()),
      renewal_(std::make_shared<Renewal>()),
      pid_(static_cast<long>(::getpid())) {
    renewal_->conn = std::move(conn);
    renewal_->key = std::move(key);
    renewal_->token = std::move(token);
    renewal_->ttl = ttl;
    renewal_->extend = &extend;
    renewer_->add(renewal_);
}

Watchdog::~Watchdog() {
    if (in_owner_process()) renewer_->cancel(*renewal_);
}

bool Watchdog::in_owner_process() const noexcept {
    return static_cast<long>(::getpid()) == pid_;
}

bool Watchdog::lost() const noexcept {
    return renewal_->lost.load(std::memory_order_acquire);
}

}  // namespace detail
}  // namespace retools
