#pragma once
// What happened to one job, and performing it.

#include <cstddef>
#include <exception>
#include <string>

#include <retools/connection.hpp>
#include <retools/worker.hpp>

#include "worker/taken_job.hpp"

namespace retools::detail {

enum class JobStatus : unsigned char { succeeded, failed, retry, aborted, requeue };

/// What happened to one job, and the bookkeeping it asks for.
struct JobOutcome {
    JobStatus status = JobStatus::failed;
    std::string job_id;  // empty when the payload could not be read
    std::string job_name;
    std::string error;         // failed / retry
    std::string result;        // JobResult text to store ("" = nothing to store)
    long long result_ttl = 0;  // seconds
    std::string retry_member;  // delayed-set member for a retry
    double retry_at = 0;
    double seconds = 0;      // time spent running
    int killed_by = 0;       // fork mode: the signal that ended the child, 0 if none
    bool timed_out = false;  // failed by WorkerOptions::job_timeout
};

struct FinishedJob {
    TakenJob job;
    JobOutcome outcome;
};

/// Limits every job is checked against before it runs.
struct PerformLimits {
    std::size_t max_payload_bytes = 16u << 20;
    /// Thread mode: a job that returns later than this (seconds; 0 = none) fails.
    double job_timeout = 0;
};

/// Runs one job: checks and parses the payload, looks up the job and its
/// handlers (in `own`, then the global registry), fires the events and calls
/// it. Never throws: every problem becomes a failed outcome.
JobOutcome perform_job(const TakenJob& taken, const JobRegistry& own, const Connection& conn,
                       const PerformLimits& limits);

/// `"<ExceptionType>: <what>"` for the exception in `error`.
std::string describe_exception(std::exception_ptr error);

/// Turns a successful or failed outcome into a failure with `error` (kept
/// result TTL: a stored result says it failed), or a retry when the job asks
/// for one. Used for job timeouts.
void fail_outcome(JobOutcome& out, const TakenJob& taken, std::string error, const Connection& conn);

}  // namespace retools::detail
