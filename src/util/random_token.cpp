#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>

#include "util/random_token.hpp"

namespace retools::detail {
namespace {

// Bumped in every forked child: a thread-local generator seeded under another
// generation re-seeds, so a child never replays its parent's random stream.
std::atomic<std::uint64_t> fork_generation{0};

void on_fork_child() noexcept {
    fork_generation.fetch_add(1, std::memory_order_relaxed);
}

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

std::uint64_t random_u64() {
    return engine()();
}

std::string uuid4_hex() {
    auto& gen = engine();
    // Two hex digits per byte from one table lookup: ids are made per job, on the enqueue hot path.
    static constexpr auto pairs = [] {
        std::array<char, 512> t{};
        constexpr char hex[] = "0123456789abcdef";
        for (int b = 0; b < 256; ++b) {
            t[static_cast<std::size_t>(2 * b)] = hex[b >> 4];
            t[static_cast<std::size_t>(2 * b + 1)] = hex[b & 0xf];
        }
        return t;
    }();
    std::uint64_t halves[2] = {gen(), gen()};
    unsigned char bytes[16];
    for (int k = 0; k < 8; ++k) {
        bytes[k] = static_cast<unsigned char>(halves[0] >> (8 * k));
        bytes[8 + k] = static_cast<unsigned char>(halves[1] >> (8 * k));
    }
    bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
    bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
    char text[32];
    for (int k = 0; k < 16; ++k) std::memcpy(text + 2 * k, &pairs[static_cast<std::size_t>(2 * bytes[k])], 2);
    return std::string(text, sizeof text);
}

std::string random_token() {
    return uuid4_hex();
}

}  // namespace retools::detail
