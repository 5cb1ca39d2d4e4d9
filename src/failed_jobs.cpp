// Entries of the failed-job list and stored results.
#include <retools/queue.hpp>

#include <cmath>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/detail/python_repr.hpp>

namespace retools {

namespace {

nlohmann::json parse_object(std::string_view text, std::string_view what) {
    nlohmann::json data;
    try {
        data = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw QueueError(fmt::format("{} is not valid JSON: {}", what, e.what()));
    }
    if (!data.is_object()) throw QueueError(fmt::format("{} is a JSON {}, not an object", what, data.type_name()));
    return data;
}

std::string string_field(const nlohmann::json& data, const char* name, std::string_view what) {
    auto it = data.find(name);
    if (it == data.end() || !it->is_string())
        throw QueueError(fmt::format("{} has no string field \"{}\"", what, name));
    return it->get<std::string>();
}

}  // namespace

std::string FailedJob::to_json() const {
    std::string out = "{\"payload\": ";
    // The payload may be anything a producer wrote; keep it even when it is not UTF-8.
    nlohmann::json text = payload;
    try {
        detail::python_json_string(payload, out, "failed payload");
    } catch (const QueueError&) {
        out.resize(std::string_view("{\"payload\": ").size());
        out.append(text.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    }
    out.append(", \"queue\": ");
    detail::python_json_string(queue, out, "failed queue name");
    out.append(", \"error\": ");
    out.append(nlohmann::json(error).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    out.append(", \"worker\": ");
    detail::python_json_string(worker, out, "worker id");
    out.append(", \"failed_at\": ");
    out.append(detail::python_repr(std::isfinite(failed_at) ? failed_at : 0.0));
    out.push_back('}');
    return out;
}

FailedJob FailedJob::from_json(std::string_view text) {
    constexpr std::string_view what = "failed-job entry";
    auto data = parse_object(text, what);
    FailedJob job;
    job.payload = string_field(data, "payload", what);
    job.queue = string_field(data, "queue", what);
    job.error = string_field(data, "error", what);
    job.worker = string_field(data, "worker", what);
    auto it = data.find("failed_at");
    if (it == data.end() || !it->is_number())
        throw QueueError(fmt::format("{} has no number field \"failed_at\"", what));
    job.failed_at = it->get<double>();
    return job;
}

std::string JobResult::to_json() const {
    std::string out;
    if (ok) {
        out = "{\"status\": \"ok\", \"result\": ";
        detail::python_json_dump(value, out, "job result");
    } else {
        out = "{\"status\": \"failed\", \"error\": ";
        out.append(nlohmann::json(error).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    }
    out.push_back('}');
    return out;
}

JobResult JobResult::from_json(std::string_view text) {
    constexpr std::string_view what = "job result";
    auto data = parse_object(text, what);
    std::string status = string_field(data, "status", what);
    JobResult r;
    if (status == "ok") {
        r.ok = true;
        auto it = data.find("result");
        if (it == data.end()) throw QueueError("job result has no \"result\" field");
        r.value = *it;
    } else if (status == "failed") {
        r.error = string_field(data, "error", what);
    } else {
        throw QueueError(fmt::format("job result status '{}' is neither ok nor failed", status));
    }
    return r;
}

}  // namespace retools
