// Queue: enqueue one job, enqueue a batch of 1,000, beside raw hiredis sending
// one RPUSH + SADD pipeline with the same payloads; a unique enqueue beside a
// plain one.

#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <retools/queue.hpp>

#include "raw.hpp"
#include "rows.hpp"

namespace bench {
namespace {

constexpr std::size_t kBatch = 1000;

Run raw_enqueue_one(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::string p;
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    noop_payload(p);
                    raw.cmd("RPUSH", "retools:queue:main", p);
                    raw.cmd("SADD", "retools:queues", "main");
                    raw.read(2);
                }
            }),
            {}};
}

Run raw_enqueue_batch(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::vector<std::string> payloads(kBatch);
    std::vector<std::string_view> argv;
    return {time_it([&] {
                for (std::size_t done = 0; done < count; done += kBatch) {
                    argv.assign({"RPUSH", "retools:queue:main"});
                    for (std::size_t i = 0; i < kBatch; ++i) {
                        noop_payload(payloads[i]);
                        argv.push_back(payloads[i]);
                    }
                    raw.append(argv);
                    raw.cmd("SADD", "retools:queues", "main");
                    raw.read(2);
                }
            }),
            {}};
}

Run retools_enqueue_one(const Env& env, std::size_t count) {
    retools::QueueManager qm{env.conn};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) qm.enqueue(kNoopJob);
            }),
            {}};
}

Run retools_enqueue_batch(const Env& env, std::size_t count) {
    retools::QueueManager qm{env.conn};
    std::vector<nlohmann::json> kwargs(kBatch);  // nulls: no kwargs, like the one-job row
    return {time_it([&] {
                for (std::size_t done = 0; done < count; done += kBatch) qm.enqueue_many(kNoopJob, kwargs);
            }),
            {}};
}

// Distinct jobs across rounds (a claim left by an earlier round would make
// the unique enqueue take its cheaper "already there" path).
std::size_t next_unique_job = 0;

Run retools_enqueue_unique(const Env& env, std::size_t count) {
    retools::QueueManager qm{env.conn};
    const std::size_t first = next_unique_job;
    next_unique_job += count;
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i)
                    qm.enqueue(kNoopJob, {{"n", first + i}}, {.unique_for = std::chrono::minutes(10)});
            }),
            {}};
}

Run retools_enqueue_plain_kwargs(const Env& env, std::size_t count) {
    retools::QueueManager qm{env.conn};
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) qm.enqueue(kNoopJob, {{"n", i}});
            }),
            {}};
}

}  // namespace

void add_queue_rows(const Env& env, std::vector<Row>& rows) {
    rows.push_back({.id = "enqueue_one",
                    .label = "Queue: enqueue one job",
                    .count = env.counts.ops,
                    .retools = retools_enqueue_one,
                    .floor = raw_enqueue_one,
                    .floor_target = 0.9});
    rows.push_back({.id = "enqueue_batch",
                    .label = "Queue: enqueue batches of 1,000",
                    .unit = "jobs/s",
                    .count = env.counts.batches * kBatch,
                    .retools = retools_enqueue_batch,
                    .floor = raw_enqueue_batch,
                    .floor_target = 0.9});
    // The floor here is retools' own plain enqueue of the same jobs.
    rows.push_back({.id = "enqueue_unique",
                    .label = "Queue: enqueue one unique job (unique_for), floor plain enqueue",
                    .count = env.counts.ops,
                    .retools = retools_enqueue_unique,
                    .floor = retools_enqueue_plain_kwargs,
                    .floor_target = 0.8});
}

}  // namespace bench
