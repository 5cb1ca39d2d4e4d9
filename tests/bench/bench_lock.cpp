// Lock, Limiter and RateLimiter: acquire (+ release) cycles, one thread and threads sharing
// one Connection, beside raw hiredis doing the same round trips; and the
// lock's hand-over latency from one process to another.

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <new>
#include <shared_mutex>
#include <string>
#include <thread>

#include <fmt/format.h>

#include <retools/limiter.hpp>
#include <retools/lock.hpp>
#include <retools/rate_limiter.hpp>
#include <retools/read_write_lock.hpp>

#include "lock/scripts.hpp"
#include "process.hpp"
#include "raw.hpp"
#include "rows.hpp"

namespace bench {
namespace {

// The floor's lock runs the lock's own two scripts (the server does the same
// work: take, fencing token, compare-and-delete, wake-up check), sent raw:
// two round trips.

std::string load_script(RawConnection& raw, std::string_view lua) {
    raw.cmd("SCRIPT", "LOAD", lua);
    auto reply = raw.read();
    return std::string(reply->str, reply->len);
}

// A 32-hex token per acquisition, like the lock's, from a counter (cheap).
std::string token(std::uint64_t n) {
    return fmt::format("{:032x}", n * 0x9E3779B97F4A7C15ull);
}

struct LockShas {
    std::string acquire, release;
};

void raw_lock_cycles(RawConnection& raw, const LockShas& sha, const std::string& key, std::size_t ops,
                     std::uint64_t seed) {
    const std::string fence = key + ":fence", signal = key + ":signal", waiting = key + ":waiting";
    for (std::size_t i = 0; i < ops; ++i) {
        std::string t = token(seed + i);
        raw.cmd("EVALSHA", sha.acquire, "3", key, fence, waiting, t, "60000", "86400000", "2000");
        auto taken = raw.read();
        if (taken->type != REDIS_REPLY_ARRAY || taken->element[0]->integer != 1)
            throw std::runtime_error("floor lock not acquired");
        raw.cmd("EVALSHA", sha.release, "3", key, signal, waiting, t, "1000");
        raw.read();
    }
}

RunFn raw_lock(std::size_t threads) {
    return [threads](const Env& env, std::size_t count) {
        std::vector<std::unique_ptr<RawConnection>> raws;
        for (std::size_t t = 0; t < threads; ++t) raws.push_back(std::make_unique<RawConnection>(env));
        LockShas sha{load_script(*raws[0], retools::detail::lock_acquire_script().source()),
                     load_script(*raws[0], retools::detail::lock_release_script().source())};
        return Run{run_threads(threads, count,
                               [&](std::size_t t, std::size_t ops) {
                                   raw_lock_cycles(*raws[t], sha, fmt::format("bench:lock:{}", t), ops,
                                                   t << 40);
                               }),
                   {}};
    };
}

RunFn retools_lock(std::size_t threads) {
    return [threads](const Env& env, std::size_t count) {
        retools::Connection shared = env.conn;
        return Run{run_threads(threads, count,
                               [&](std::size_t t, std::size_t ops) {
                                   std::string key = fmt::format("bench:lock:{}", t);
                                   for (std::size_t i = 0; i < ops; ++i) {
                                       retools::Lock lock{key, {.connection = shared}};
                                   }
                               }),
                   {}};
    };
}

// The floor's limiter: the limiter's own script (count, prune expired holders
// and add atomically, timed by the server's clock), then ZREM.
Run raw_limiter(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::string sha = load_script(raw, retools::detail::limiter_acquire_script().source());
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    raw.cmd("EVALSHA", sha, "1", "bench:limiter", "operation-1", "10", "10000", "1");
                    if (raw.read()->integer != 1) throw std::runtime_error("floor limiter refused");
                    raw.cmd("ZREM", "bench:limiter", "operation-1");
                    raw.read();
                }
            }),
            {}};
}

Run retools_limiter(const Env& env, std::size_t count) {
    retools::Limiter limiter{{.limit = 10, .prefix = "bench:limiter", .connection = env.conn}};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    if (!limiter.acquire_limit("operation-1")) throw std::runtime_error("limiter refused");
                    limiter.release_limit("operation-1");
                }
            }),
            {}};
}

// ReadWriteLock: a reader's acquire + release (two scripts, two round
// trips), against a Lock's acquire + release sent raw as the floor: what
// sharing costs over an exclusive lock.
Run retools_rw_shared(const Env& env, std::size_t count) {
    retools::ReadWriteLock rw{"bench:rw", {.connection = env.conn}};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    std::shared_lock reader{rw};
                }
            }),
            {}};
}

// RateLimiter: one GCRA decision per request, every one admitted (a million
// per second, a burst larger than the run). The floor runs the same script
// with the same arguments: one round trip each.
constexpr std::uint64_t kRate = 1'000'000, kBurst = 1'000'000'000;

Run raw_rate_limiter(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::string sha = load_script(raw, retools::detail::rate_limiter_acquire_script().source());
    const std::string interval = "1", burst = std::to_string(kBurst);
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    raw.cmd("EVALSHA", sha, "1", "bench:rate:floor", interval, burst, "1");
                    auto r = raw.read();
                    if (r->type != REDIS_REPLY_ARRAY || r->element[0]->integer != 1)
                        throw std::runtime_error("floor rate limiter refused");
                }
            }),
            {}};
}

Run retools_rate_limiter(const Env& env, std::size_t count) {
    retools::RateLimiter limiter{{.rate = kRate,
                                  .period = std::chrono::seconds(1),
                                  .burst = kBurst,
                                  .prefix = "bench:rate",
                                  .connection = env.conn}};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i)
                    if (!limiter.acquire("retools").allowed) throw std::runtime_error("rate limiter refused");
            }),
            {}};
}

// Hand-over latency: two processes pass one lock back and forth. Each holds
// it for 2 ms (the other is then blocked waiting), notes the time just before
// releasing, and waits for the other to take it before trying again; the
// other notes when it acquired. Same protocol as the redis-py peer.
struct HandOverBoard {
    std::atomic<std::size_t> acquisitions{0};
    std::atomic<std::int64_t> released_at{0};
    std::atomic<int> failures{0};
};

std::int64_t monotonic_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void hand_over(const Env& env, HandOverBoard& board, std::int64_t* latency_ns, std::size_t count) {
    retools::Connection own{retools::ConnectionOptions::from_url(env.url)};
    retools::Lock lock{
        "bench:handover", {.timeout = std::chrono::seconds(10), .connection = own}, std::defer_lock};
    for (;;) {
        lock.lock();
        auto acquired_at = monotonic_ns();
        std::size_t n = board.acquisitions.fetch_add(1);
        if (n >= 1 && n <= count) latency_ns[n - 1] = acquired_at - board.released_at.load();
        if (n >= count) {
            lock.unlock();
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        board.released_at.store(monotonic_ns());
        lock.unlock();
        auto deadline = Clock::now() + std::chrono::seconds(10);
        while (board.acquisitions.load() < n + 2) {
            if (Clock::now() > deadline) {
                ++board.failures;
                return;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
}

// The rate is hand-overs per second of latency (1 / mean); p50 and p99 in the notes.
Run retools_handover(const Env& env, std::size_t count) {
    std::size_t bytes = sizeof(HandOverBoard) + count * sizeof(std::int64_t);
    void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::runtime_error("mmap failed");
    auto* board = new (memory) HandOverBoard{};
    auto* latency_ns = reinterpret_cast<std::int64_t*>(static_cast<char*>(memory) + sizeof(HandOverBoard));
    std::vector<retools::test::ChildProcess> children;
    for (int p = 0; p < 2; ++p)
        children.push_back(retools::test::ChildProcess::fork([&] {
            hand_over(env, *board, latency_ns, count);
            return 0;
        }));
    int failed = 0;
    for (auto& c : children) failed += c.exit_code(std::chrono::seconds(120)) != 0;
    failed += board->failures.load();
    std::vector<double> us(latency_ns, latency_ns + count);
    board->~HandOverBoard();
    ::munmap(memory, bytes);
    if (failed) throw std::runtime_error("a hand-over process failed");
    for (double& v : us) v /= 1000.0;
    std::sort(us.begin(), us.end());
    double total = 0;
    for (double v : us) total += v;
    auto at = [&](double q) { return us[std::min(us.size() - 1, static_cast<std::size_t>(q * us.size()))]; };
    return {total / 1e6, {{"p50 µs", at(0.50)}, {"p99 µs", at(0.99)}}};
}

}  // namespace

void add_lock_rows(const Env& env, std::vector<Row>& rows) {
    std::size_t n = env.counts.ops;
    rows.push_back({.id = "lock_cycle",
                    .label = "Lock: acquire + release",
                    .count = n,
                    .retools = retools_lock(1),
                    .floor = raw_lock(1),
                    .floor_target = 0.9});
    rows.push_back({.id = "limiter_cycle",
                    .label = "Limiter: acquire + release",
                    .count = n,
                    .retools = retools_limiter,
                    .floor = raw_limiter,
                    .floor_target = 0.9});
    rows.push_back({.id = "rwlock_shared_cycle",
                    .label = "ReadWriteLock: shared acquire + release (floor: a Lock's, raw)",
                    .count = n,
                    .retools = retools_rw_shared,
                    .floor = raw_lock(1),
                    .floor_target = 0.8});
    rows.push_back({.id = "rate_limiter_acquire",
                    .label = "RateLimiter: acquire",
                    .count = n,
                    .retools = retools_rate_limiter,
                    .floor = raw_rate_limiter,
                    .floor_target = 0.9});
    rows.push_back({.id = "lock_handover",
                    .label = "Lock hand-over, process to process",
                    .unit = "1/mean latency",
                    .count = std::max<std::size_t>(n / 100, 20),
                    .retools = retools_handover});
    for (std::size_t threads : {4, 16})
        rows.push_back({.id = fmt::format("lock_threads_{}", threads),
                        .label = fmt::format("Lock cycles, {} threads sharing one pool", threads),
                        .count = n * 2,
                        .retools = retools_lock(threads),
                        .floor = raw_lock(threads),
                        .floor_target = 0.8});
}

}  // namespace bench
