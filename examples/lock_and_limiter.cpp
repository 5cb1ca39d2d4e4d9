// A distributed lock and a concurrency limiter: the RAII Lock, std::unique_lock
// with try_lock_for, and Limiter slots. Run it against any Redis:
// REDIS_URL=redis://127.0.0.1:6379/0. It uses the keys examples:lock and
// examples:limiter and deletes them at the end.
//
// Exit status: 0 when every check passed, 1 otherwise.
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <retools/limiter.hpp>
#include <retools/lock.hpp>

using namespace std::chrono_literals;

namespace {

int failures = 0;

// Prints one check and remembers failures for the exit status.
void check(bool ok, std::string_view what) {
    fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++failures;
}

const std::string lock_key = "examples:lock";
const std::string limiter_key = "examples:limiter";

void lock_examples(const retools::Connection& conn) {
    // 1. RAII: the constructor acquires (or throws LockTimeout), the destructor releases.
    {
        retools::Lock lock{lock_key, {.expires = 5s, .timeout = 1s}};
        check(conn.command("GET", lock_key).as_string() == lock.token(), "the key holds this holder's token");

        // Another holder (another thread, process or Python service) is kept out.
        try {
            retools::Lock second{lock_key, {.timeout = 0s}};  // exactly one attempt
            check(false, "a second holder is refused");
        } catch (const retools::LockTimeout& e) {
            check(true, fmt::format("a second holder is refused: {}", e.what()));
        }
    }  // released here
    check(conn.command("EXISTS", lock_key).as_integer() == 0, "the destructor released the lock");

    // 2. Lock is a TimedLockable: std::unique_lock and try_lock_for work.
    //    A background thread holds the lock for 600 ms.
    std::atomic<bool> holding{false};
    std::thread holder([&] {
        retools::Lock lock{lock_key, {.expires = 5s}};
        holding = true;
        std::this_thread::sleep_for(600ms);
    });
    while (!holding) std::this_thread::sleep_for(1ms);

    retools::Lock lock{lock_key, {.expires = 5s, .max_retry_delay = 50ms}, std::defer_lock};
    {
        std::unique_lock guard{lock, std::defer_lock};
        check(!guard.try_lock_for(50ms), "try_lock_for(50ms) gives up while the other thread holds the lock");
        check(guard.try_lock_for(3s), "try_lock_for(3s) gets it once the other thread releases it");
        check(lock.owns_lock(), "owns_lock() confirms it in Redis");
    }  // the unique_lock unlocks here
    holder.join();
    check(!lock.held() && conn.command("EXISTS", lock_key).as_integer() == 0, "std::unique_lock released it");

    // 3. Work that may outlive `expires`: extend the TTL while working.
    {
        retools::Lock long_work{lock_key, {.expires = 1s}};
        long_work.extend(10s);
        check(conn.command("PTTL", lock_key).as_integer() > 5000, "extend(10s) pushed the TTL back");
        check(long_work.release() == retools::ReleaseResult::released,
              "release() says the lock was still ours");
    }
}

void limiter_examples(const retools::Connection& conn) {
    // At most 2 holders at once, across every process sharing the sorted set.
    retools::Limiter limiter{{.limit = 2, .prefix = limiter_key, .expiration = 10s}};

    // 1. The RAII slot guard: released when it goes out of scope (also on throw).
    {
        auto a = limiter.acquire("worker-a");
        auto b = limiter.acquire("worker-b");
        auto c = limiter.acquire("worker-c");
        check(a && b && !c, "limit 2: a and b get a slot, c does not");
        check(limiter.holders() == 2, "two holders in the sorted set");
    }
    check(limiter.holders() == 0, "the slots were released by their guards");

    // 2. Waiting for a slot: six threads, at most two inside at once.
    std::atomic<int> inside{0}, most{0}, done{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&, t] {
            if (auto slot = limiter.acquire_for(fmt::format("thread-{}", t), 5s)) {
                int now = ++inside;
                for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {}
                std::this_thread::sleep_for(30ms);
                --inside;
                ++done;
            }
        });
    }
    for (auto& t : threads) t.join();
    check(done == 6 && most <= 2,
          fmt::format("6 threads with acquire_for: all finished, at most {} at once", most.load()));

    // 3. The Python-style calls: acquire_limit / release_limit by key.
    if (limiter.acquire_limit("operation-1")) {
        check(limiter.holders() == 1, "acquire_limit took a slot");
        limiter.release_limit("operation-1");
    } else {
        check(false, "acquire_limit took a slot");
    }
    check(conn.command("EXISTS", limiter_key).as_integer() == 0, "no slot left behind");
}

}  // namespace

int main() {
    try {
        const retools::Connection& conn = retools::global_connection();  // reads REDIS_URL
        // The lock's extra keys too: its fencing counter and its wake-up list and mark.
        auto cleanup = [&] {
            conn.command("DEL", lock_key, lock_key + ":fence", lock_key + ":signal", lock_key + ":waiting",
                         limiter_key);
        };
        cleanup();
        lock_examples(conn);
        limiter_examples(conn);
        cleanup();
    } catch (const retools::Error& e) {
        fmt::print(stderr, "lock_and_limiter: {}\n", e.what());
        return 1;
    }
    if (failures) {
        fmt::print("lock_and_limiter: {} check(s) failed\n", failures);
        return 1;
    }
    fmt::print("lock_and_limiter: all checks passed\n");
    return 0;
}
