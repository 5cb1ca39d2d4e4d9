#pragma once
// What QueueManager writes, as pieces other writers (the worker's finish
// bookkeeping) compose into their own atomic calls. Not installed.

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/queue.hpp>

#include "queue/topology.hpp"

namespace retools {

namespace detail {

/// Cluster: files members of `queue`'s delayed set that promote_queue
/// (src/queue/lua/promote_queue.lua) could not read in retools:failed
/// (byte-exact), then removes them from the set: two commands in two slots,
/// in that order, so a crash between them duplicates an entry rather than
/// losing it.
void quarantine_delayed(const Connection& conn, std::string_view queue, const std::vector<Reply>& bad,
                        std::string_view worker_id, double now);

/// Member of `retools:delayed` for a payload due on `queue`:
/// `{"queue": "<queue>", "payload": "<payload text>"}`.
std::string delayed_member(std::string_view queue, std::string_view payload);

/// Appends to `p` what QueueManager::retry_later sends (counting the retry
/// in `job.state()["retried"]`), for callers that finish a job atomically in
/// their own MULTI/EXEC (e.g. with the LREM from a processing list).
/// Returns the due time.
/// `topology`: where the queue's delayed set is (Topology::add_delayed).
std::chrono::system_clock::time_point add_retry_later(Pipeline& p, Job& job,
                                                      std::chrono::duration<double> delay,
                                                      const queue::Topology& topology);

/// Appends to `p` what QueueManager::record_failure sends.
void add_record_failure(Pipeline& p, FailedJob failed);

/// Appends to `p` the commands that store a job result (DEL, RPUSH, EXPIRE),
/// for callers composing their own MULTI/EXEC.
void add_store_result(Pipeline& p, std::string_view job_id, const JobResult& result,
                      std::chrono::seconds ttl);

}  // namespace detail

}  // namespace retools
