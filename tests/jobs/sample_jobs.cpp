// A job library the retools-worker tests load with --load. Built against the
// retools headers only (no libretools): its RETOOLS_REGISTER_* calls resolve
// to the worker program's registry, as a user's job library would.
#include <unistd.h>

#include <chrono>
#include <thread>

#include <retools/worker.hpp>

namespace {

// Appends kwargs["tag"] to the list kwargs["out"], through the job's own connection.
nlohmann::json record(const nlohmann::json& kw) {
    retools::global_connection().command("RPUSH", kw.at("out").get<std::string>(),
                                         kw.at("tag").get<std::string>());
    return kw.at("tag");
}

}  // namespace

RETOOLS_REGISTER_JOB("sample.jobs:record", record);

RETOOLS_REGISTER_JOB("sample.jobs:sleep", [](const nlohmann::json& kw) -> nlohmann::json {
    if (kw.contains("started"))
        retools::global_connection().command("RPUSH", kw["started"].get<std::string>(), "1");
    std::this_thread::sleep_for(std::chrono::milliseconds(kw.value("ms", 100)));
    if (kw.contains("out"))
        retools::global_connection().command("RPUSH", kw["out"].get<std::string>(), kw.value("tag", "done"));
    return nullptr;
});

RETOOLS_REGISTER_JOB("sample.jobs:pid", [](const nlohmann::json& kw) -> nlohmann::json {
    retools::global_connection().command("RPUSH", kw.at("out").get<std::string>(),
                                         static_cast<long long>(::getpid()));
    return nullptr;
});

RETOOLS_REGISTER_POSTRUN("sample.jobs:after", [](retools::Job& job, const nlohmann::json& result) {
    retools::global_connection().command("RPUSH", "sample:postrun", job.id() + " " + result.dump());
});
