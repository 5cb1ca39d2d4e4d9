// Stored job results (retools:result:<job id>): writing, reading, waiting.
#include <chrono>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "generated/lua_scripts.hpp"
#include "queue/json_fields.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"

namespace retools {

namespace keys = detail::queue_keys;

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
    auto data = detail::parse_object(text, what);
    std::string status = detail::string_field(data, "status", what);
    JobResult r;
    if (status == "ok") {
        r.ok = true;
        auto it = data.find("result");
        if (it == data.end()) throw QueueError("job result has no \"result\" field");
        r.value = *it;
    } else if (status == "failed") {
        r.error = detail::string_field(data, "error", what);
    } else {
        throw QueueError(fmt::format("job result status '{}' is neither ok nor failed", status));
    }
    return r;
}

// ---- results -------------------------------------------------------------------

namespace detail {

void add_store_result(Pipeline& p, std::string_view job_id, const JobResult& result,
                      std::chrono::seconds ttl) {
    if (ttl.count() <= 0)
        throw ConfigurationError(fmt::format("result TTL for job {} must be at least 1 s", job_id));
    std::string key = queue_keys::result(job_id);
    // A one-element list rather than a string, so waiters can block on it (BLMOVE).
    p.command("DEL", key).command("RPUSH", key, result.to_json()).command("EXPIRE", key, ttl.count());
}

}  // namespace detail

void QueueManager::store_result(std::string_view job_id, const JobResult& result,
                                std::chrono::seconds ttl) const {
    Pipeline p;
    detail::add_store_result(p, job_id, result, ttl);
    impl_->conn_.transaction(p);
}

std::optional<JobResult> QueueManager::get_result(std::string_view job_id) const {
    // The documented form is a one-element list; a plain string (SET by
    // another writer) is read too (src/queue/lua/get_result.lua).
    static const Script peek_result{std::string(detail::lua::queue_get_result)};
    Reply r = peek_result(impl_->conn_, {keys::result(job_id)});
    if (r.is_nil()) return std::nullopt;
    return JobResult::from_json(r.view());
}

std::optional<JobResult> QueueManager::wait_for_result(std::string_view job_id,
                                                       std::chrono::milliseconds timeout) const {
    using namespace std::chrono;
    auto deadline = steady_clock::now() + timeout;
    std::string key = keys::result(job_id);
    // Block server-side in slices growing to 1 s, looking between them: a
    // list result (what store_result writes) wakes the BLMOVE at once; a
    // string result, which no blocking command sees, is found by the next look.
    milliseconds slice{100};
    while (true) {
        if (auto r = get_result(job_id)) return r;
        auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        auto block = std::min(slice, left);
        slice = std::min(slice * 2, milliseconds{1000});
        // Rotating the one-element list onto itself leaves it (and its TTL) in
        // place and hands it on to the next blocked waiter.
        detail::CommandBuffer b;
        b.add("BLMOVE", key, key, "LEFT", "RIGHT", static_cast<double>(block.count()) / 1000.0);
        Reply r = detail::send_command(impl_->conn_, b, std::nullopt, block);
        if (r.is_error()) {
            if (r.error_message().starts_with("WRONGTYPE")) continue;  // a string appeared: look again
            r.check();
        }
        if (!r.is_nil()) return JobResult::from_json(r.view());
    }
}

}  // namespace retools
