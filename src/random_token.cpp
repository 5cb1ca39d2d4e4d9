#include <retools/detail/random_token.hpp>

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>

namespace retools::detail {
namespace {

// Bumped in every forked child: a thread-local generator seeded under another
// generation re-seeds, so a child never replays its parent's random stream.
std::atomic<std::uint64_t> fork_generation{0};

void on_fork_child() noexcept { fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct Generator {
    std::mt19937_64 engine;
    std::uint64_t generation = ~std::uint64_t{0};

    void seed() {
        std::random_device device;
        std::array<std::uint32_t, 8> words{};
        for (auto& w : words) w = device();
        std::seed_seq seq(words.begin(), words.end());
        engine.seed(seq);
    }
};

std::mt19937_64& engine() {
    static std::once_flag registered;
    std::call_once(registered, [] { ::pthread_atfork(nullptr, nullptr, on_fork_child); });

    thread_local Generator gen;
    auto current = fork_generation.load(std::memory_order_relaxed);
    if (gen.generation != current) {
        gen.seed();
        gen.generation = current;
    }
    return gen.engine;
}

}  // namespace

std::uint64_t random_u64() { return engine()(); }

std::string random_token() {
    auto& gen = engine();

    static constexpr char hex[] = "0123456789abcdef";
    std::string token(32, '0');
    for (int half = 0; half < 2; ++half) {
        std::uint64_t bits = gen();
        for (int i = 0; i < 16; ++i) {
            token[static_cast<std::size_t>(half * 16 + i)] = hex[bits & 0xf];
            bits >>= 4;
        }
    }
    return token;
}

}  // namespace retools::detail
