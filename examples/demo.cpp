// A tour of retools against the server in REDIS_URL (scripts/demo.sh starts a
// private one). Each section prints what happened.
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include <retools/retools.hpp>

using namespace std::chrono_literals;

namespace {

void section(std::string_view title) { fmt::print("\n== {} ==\n", title); }

void connection_demo(const retools::Connection& conn) {
    section("Connection");
    conn.command("SET", "demo:greeting", "hello from retools");
    fmt::print("GET demo:greeting -> {}\n", conn.command("GET", "demo:greeting").as_string());
    retools::Pipeline p;
    for (int i = 0; i < 5; ++i) p.command("INCR", "demo:counter");
    auto before = conn.round_trips();
    auto replies = conn.execute(p);
    fmt::print("5 INCRs in one pipeline: counter = {} ({} round trip)\n", replies.back().as_integer(),
               conn.round_trips() - before);
    conn.command("DEL", "demo:greeting", "demo:counter");
}


// ---- cache ----------------------------------------------------------------

void cache_demo(const retools::Connection& conn) {
    section("Cache");
    (void)conn;
}


// ---- lock ----------------------------------------------------------------

void lock_demo(const retools::Connection& conn) {
    section("Lock");
    (void)conn;
}


// ---- limiter ----------------------------------------------------------------

void limiter_demo(const retools::Connection& conn) {
    section("Limiter");
    (void)conn;
}


// ---- queue ----------------------------------------------------------------

void queue_demo(const retools::Connection& conn) {
    section("Queue");
    (void)conn;
}

}  // namespace

int main() {
    try {
        retools::Connection& conn = retools::global_connection();
        fmt::print("retools demo against {}\n", conn.options().describe());
        connection_demo(conn);
        cache_demo(conn);
        lock_demo(conn);
        limiter_demo(conn);
        queue_demo(conn);
        fmt::print("\ndemo finished\n");
        return 0;
    } catch (const retools::Error& e) {
        fmt::print(stderr, "demo failed: {}\n", e.what());
        return 1;
    }
}
