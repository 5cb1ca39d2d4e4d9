// The failed-job list retools:failed: entries (byte-exact payloads), listing,
// retrying and removing them.
#include <cmath>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>

#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "python/utf8.hpp"
#include "queue/json_limits.hpp"
#include "util/clock.hpp"
#include "queue/json_fields.hpp"
#include "queue/json_limits.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "queue/python_json.hpp"
#include "queue/queue_manager_impl.hpp"
#include "util/clock.hpp"

namespace retools {

namespace keys = detail::queue_keys;

namespace {

std::string lossy_json_string(std::string_view text) {
    return nlohmann::json(std::string(text)).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string FailedJob::to_json() const {
    std::string out = "{\"payload\": ";
    // JSON cannot hold bytes that are not UTF-8: those payloads are written
    // as a readable copy (U+FFFD for the bad bytes) plus the exact bytes in
    // base64, so the entry can be retried as it was.
    if (detail::valid_utf8(payload)) {
        detail::python_json_string(payload, out, "failed payload");
    } else {
        out.append(lossy_json_string(payload));
        out.append(", \"payload_base64\": \"");
        out.append(detail::base64_encode(payload));
        out.push_back('"');
    }
    out.append(", \"queue\": ");
    out.append(lossy_json_string(queue));
    out.append(", \"error\": ");
    out.append(lossy_json_string(error));
    out.append(", \"worker\": ");
    out.append(lossy_json_string(worker));
    out.append(", \"failed_at\": ");
    out.append(detail::python_repr(std::isfinite(failed_at) ? failed_at : 0.0));
    out.push_back('}');
    return out;
}

FailedJob FailedJob::from_json(std::string_view text) {
    constexpr std::string_view what = "failed-job entry";
    auto data = detail::parse_object(text, what);
    FailedJob job;
    if (auto b64 = data.find("payload_base64"); b64 != data.end() && !b64->is_null()) {
        auto bytes =
            b64->is_string() ? detail::base64_decode(b64->get_ref<const std::string&>()) : std::nullopt;
        if (!bytes) throw QueueError(fmt::format("{} field \"payload_base64\" is not base64", what));
        job.payload = std::move(*bytes);
    } else {
        job.payload = detail::string_field(data, "payload", what);
    }
    job.queue = detail::string_field(data, "queue", what);
    job.error = detail::string_field(data, "error", what);
    job.worker = detail::string_field(data, "worker", what);
    auto it = data.find("failed_at");
    if (it == data.end() || !it->is_number())
        throw QueueError(fmt::format("{} has no number field \"failed_at\"", what));
    job.failed_at = it->get<double>();
    job.entry = std::string(text);
    return job;
}

// ---- QueueManager: failed jobs ---------------------------------------------------

std::vector<FailedJob> QueueManager::failed_jobs() const {
    std::vector<FailedJob> out;
    for (const auto& r : impl_->conn_.command("LRANGE", keys::failed, 0, -1).as_array()) {
        try {
            out.push_back(FailedJob::from_json(r.view()));
        } catch (const QueueError& e) {
            FailedJob raw;
            raw.payload = r.as_string();
            raw.entry = raw.payload;
            raw.error = fmt::format("unreadable entry in retools:failed: {}", e.what());
            out.push_back(std::move(raw));
        }
    }
    return out;
}

std::size_t QueueManager::failed_count() const {
    return static_cast<std::size_t>(impl_->conn_.command("LLEN", keys::failed).as_integer());
}

bool QueueManager::retry_failed(const FailedJob& failed) const {
    detail::validate_queue_name(failed.queue);
    std::string entry = failed.entry.empty() ? failed.to_json() : failed.entry;
    return impl_->topology_.retry_failed(impl_->conn_, failed, entry);
}

std::size_t QueueManager::retry_all_failed() const {
    return impl_->topology_.retry_all_failed(*this, impl_->conn_);
}

bool QueueManager::remove_failed(const FailedJob& failed) const {
    std::string entry = failed.entry.empty() ? failed.to_json() : failed.entry;
    return impl_->conn_.command("LREM", keys::failed, 1, entry).as_integer() == 1;
}

std::size_t QueueManager::clear_failed() const {
    Pipeline p;
    p.command("LLEN", keys::failed).command("DEL", keys::failed);
    return static_cast<std::size_t>(impl_->conn_.transaction(p).at(0).as_integer());
}

void QueueManager::record_failure(FailedJob failed) const {
    Pipeline p;
    detail::add_record_failure(p, std::move(failed));
    detail::check_replies(impl_->conn_.execute(p), p);
}

namespace detail {

void add_record_failure(Pipeline& p, FailedJob failed) {
    if (failed.failed_at == 0) failed.failed_at = unix_now();
    p.command("RPUSH", queue_keys::failed, failed.to_json());
}

}  // namespace detail

}  // namespace retools
