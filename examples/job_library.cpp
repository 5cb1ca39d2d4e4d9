// A job library for the retools-worker program: built as a shared library
// (a CMake MODULE) against the retools headers only, loaded with
//
//   retools-worker --load ./libjob_library.so examples_lib
//
// Each RETOOLS_REGISTER_* below runs when the worker loads the library and
// registers into the worker's JobRegistry::global(). Do not link retools into
// the library: the worker exports its own copy, and a second one would have a
// registry the worker never reads. See the rule in examples/CMakeLists.txt:
//
//   add_library(job_library MODULE job_library.cpp)
//   target_include_directories(job_library PRIVATE
//       $<TARGET_PROPERTY:retools::retools,INTERFACE_INCLUDE_DIRECTORIES>)
//   target_link_libraries(job_library PRIVATE nlohmann_json::nlohmann_json fmt::fmt)
//
// job_client.cpp enqueues these jobs and waits for their results.
#include <sstream>
#include <stdexcept>
#include <string>

#include <retools/worker.hpp>

namespace {

// A job takes the kwargs the enqueuer passed and returns a JSON result
// (stored when the job was enqueued with metadata result_ttl).
nlohmann::json word_count(const nlohmann::json& kw) {
    std::istringstream words{kw.at("text").get<std::string>()};
    int n = 0;
    for (std::string word; words >> word;) ++n;
    return n;
}

}  // namespace

RETOOLS_REGISTER_JOB("examples.jobs:word_count", word_count);

// Throwing fails the job: it goes to retools:failed with the exception's text
// (or is retried later when the job's metadata asks for retries).
RETOOLS_REGISTER_JOB("examples.jobs:reject", [](const nlohmann::json& kw) -> nlohmann::json {
    throw std::runtime_error("rejected: " + kw.value("reason", std::string("no reason")));
});

// An event handler, run after every successful job that subscribed to it
// (qm.subscriber("job_postrun", "examples.jobs:count_done")). Jobs and handlers
// may use retools themselves, through global_connection() (the worker's --url).
RETOOLS_REGISTER_POSTRUN("examples.jobs:count_done", [](retools::Job&, const nlohmann::json&) {
    retools::global_connection().command("INCR", "examples:jobs_done");
});
