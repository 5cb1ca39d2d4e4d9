#pragma once
// Periodic jobs: promoting due runs, shared by QueueManager and the worker.
// Not installed.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>

#include "queue/topology.hpp"

namespace retools::detail {

/// What one look at the periodic jobs did.
struct PeriodicPromotion {
    std::size_t enqueued = 0;           // runs this call enqueued
    std::optional<double> next_run;     // the earliest next run (Unix seconds) after it, if any
    std::vector<std::string> problems;  // definitions that could not run (bad schedule, queue key)
};

/// Enqueues the periodic jobs due at `now` (Unix seconds), each in one
/// compare-and-set script (src/queue/lua/periodic_promote.lua): of all the
/// callers that saw one due time, exactly one enqueues it. The run after it
/// is the schedule's first due time after `now`, so times missed while
/// nobody looked are run once.
PeriodicPromotion promote_periodic(const Connection& conn, const queue::Topology& topology, double now);

/// The payload of the run of periodic job `id` due at `due`, from its stored
/// `definition`: a plain job whose metadata adds `enqueued_at` (= `now`),
/// `periodic_id` and `periodic_due`. Throws QueueError for a definition
/// that is not one, or values JSON cannot hold.
std::string periodic_payload(const nlohmann::json& definition, std::string_view id, double due, double now,
                             std::string_view job_id);

}  // namespace retools::detail
