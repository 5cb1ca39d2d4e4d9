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
    using nlohmann::json;
    retools::QueueManager qm{conn, "demo"};
    std::vector<std::string> ids = {
        qm.enqueue("demo.jobs:add", {{"a", 2}, {"b", 3}}, {.metadata = {{"result_ttl", 60}}}),
        qm.enqueue("demo.jobs:add", {{"a", 40}, {"b", 2}}, {.queue_name = "demo_high", .metadata = {{"result_ttl", 60}}}),
        qm.enqueue("demo.jobs:explode", json::object()),
        qm.enqueue("demo.jobs:not_registered", json::object()),
    };
    fmt::print("enqueued {} jobs on demo and demo_high\n", ids.size());

    // A worker taking demo_high first, in burst mode: it returns once both queues are empty.
    retools::Worker worker{{"demo_high", "demo"},
                           {.connection = conn, .handle_signals = false, .log = retools::WorkerLog::none}};
    worker.register_job("demo.jobs:add", [](const json& kw) -> json {
        fmt::print("  running add({}, {})\n", kw.at("a").get<int>(), kw.at("b").get<int>());
        return kw.at("a").get<int>() + kw.at("b").get<int>();
    });
    worker.register_job("demo.jobs:explode", [](const json&) -> json { throw std::runtime_error("boom"); });
    retools::WorkSummary summary = worker.work({.burst = true});
    fmt::print("worker drained the queues: {} succeeded, {} failed\n", summary.succeeded, summary.failed);

    for (const auto& id : {ids[0], ids[1]})
        if (auto result = qm.get_result(id)) fmt::print("result of {}: {}\n", id.substr(0, 8), result->value.dump());
    for (const auto& failed : qm.failed_jobs()) {
        if (failed.worker != worker.id()) continue;  // someone else's failure: leave it
        fmt::print("failed job from queue {}: {}\n", failed.queue, failed.error);
        qm.remove_failed(failed);
    }

    for (const auto& id : ids) conn.command("DEL", "retools:result:" + id);
    conn.command("SREM", "retools:queues", "demo", "demo_high");
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
