// Entries of the failed-job list and stored results.
#include <cmath>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/script.hpp>

#include "core/clock.hpp"
#include "core/errors.hpp"
#include "queue/keys.hpp"

namespace retools {

namespace {

nlohmann::json parse_object(std::string_view text, std::string_view what) {
    nlohmann::json data;
    try {
        data = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw QueueError(fmt::format("{} is not valid JSON: {}", what, e.what()));
    }
    if (!data.is_object())
        throw QueueError(fmt::format("{} is a JSON {}, not an object", what, data.type_name()));
    return data;
}

std::string string_field(const nlohmann::json& data, const char* name, std::string_view what) {
    auto it = data.find(name);
    if (it == data.end() || !it->is_string())
        throw QueueError(fmt::format("{} has no string field \"{}\"", what, name));
    return it->get<std::string>();
}

// KEYS[1] = retools:failed, KEYS[2] = queue key, KEYS[3] = retools:queues;
// ARGV[1] = the entry, ARGV[2] = its payload, ARGV[3] = its queue name.
// The queue key is checked before the entry leaves the failed list: a script
// error keeps the writes before it, and would lose the job.
const Script retry_one_script{R"lua(
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'none' and t ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a list')
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
)lua"};

// KEYS[1] = retools:failed, KEYS[2] = retools:queues; ARGV[1] = queue key prefix.
// Entries that cannot be retried (unreadable, or their queue key is not a
// list) stay, in order. Nothing may fail half-way: an error after some pushes
// would leave those entries in the list too, to be retried twice.
const Script retry_all_script{R"lua(
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'none' and t ~= 'set' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a set')
end
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local keep = {}
local moved = 0
for _, e in ipairs(entries) do
  local ok, f = pcall(cjson.decode, e)
  local pushed = false
  if ok and type(f) == 'table' and type(f.payload) == 'string' and type(f.queue) == 'string'
     and f.queue ~= '' and not string.find(f.queue, '[:,]') then
    local r = redis.pcall('RPUSH', ARGV[1] .. f.queue, f.payload)
    pushed = not (type(r) == 'table' and r.err)
  end
  if pushed then
    redis.call('SADD', KEYS[2], f.queue)
    moved = moved + 1
  else
    keep[#keep + 1] = e
  end
end
redis.call('DEL', KEYS[1])
for i = 1, #keep, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
end
return moved
)lua"};

namespace keys = detail::queue_keys;

}  // namespace

std::string FailedJob::to_json() const {
    std::string out = "{\"payload\": ";
    // The payload may be anything a producer wrote. JSON cannot hold bytes
    // that are not UTF-8: those (only those) become U+FFFD rather than losing the entry.
    try {
        detail::python_json_string(payload, out, "failed payload");
    } catch (const QueueError&) {
        out.resize(std::string_view("{\"payload\": ").size());
        out.append(nlohmann::json(payload).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
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
    job.entry = std::string(text);
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

// ---- QueueManager: failed jobs ---------------------------------------------------

std::vector<FailedJob> QueueManager::failed_jobs() const {
    std::vector<FailedJob> out;
    for (const auto& r : conn_.command("LRANGE", keys::failed, 0, -1).as_array()) {
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
    return static_cast<std::size_t>(conn_.command("LLEN", keys::failed).as_integer());
}

bool QueueManager::retry_failed(const FailedJob& failed) const {
    detail::validate_queue_name(failed.queue);
    std::string entry = failed.entry.empty() ? failed.to_json() : failed.entry;
    Reply r = retry_one_script(conn_, {keys::failed, keys::queue(failed.queue), keys::queues}, entry,
                               failed.payload, failed.queue);
    return r.as_integer() == 1;
}

std::size_t QueueManager::retry_all_failed() const {
    Reply r = retry_all_script(conn_, {keys::failed, keys::queues}, keys::queue_prefix);
    return static_cast<std::size_t>(r.as_integer());
}

bool QueueManager::remove_failed(const FailedJob& failed) const {
    std::string entry = failed.entry.empty() ? failed.to_json() : failed.entry;
    return conn_.command("LREM", keys::failed, 1, entry).as_integer() == 1;
}

std::size_t QueueManager::clear_failed() const {
    Pipeline p;
    p.command("LLEN", keys::failed).command("DEL", keys::failed);
    return static_cast<std::size_t>(conn_.transaction(p).at(0).as_integer());
}

void QueueManager::record_failure(FailedJob failed) const {
    Pipeline p;
    detail::add_record_failure(p, std::move(failed));
    detail::check_replies(conn_.execute(p), p);
}

// ---- results -------------------------------------------------------------------

namespace detail {

void add_record_failure(Pipeline& p, FailedJob failed) {
    if (failed.failed_at == 0) failed.failed_at = unix_now();
    p.command("RPUSH", queue_keys::failed, failed.to_json());
}

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
    conn_.transaction(p);
}

namespace {

// KEYS[1] = result key. The documented form is a one-element list; a plain
// string (SET by another writer) is read too.
const Script peek_result_script{R"lua(
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'list' then return redis.call('LINDEX', KEYS[1], 0) end
if t == 'string' then return redis.call('GET', KEYS[1]) end
return false
)lua"};

}  // namespace

std::optional<JobResult> QueueManager::get_result(std::string_view job_id) const {
    Reply r = peek_result_script(conn_, {keys::result(job_id)});
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
        Reply r = conn_.execute_one(
            [&] {
                detail::CommandBuffer b;
                b.add("BLMOVE", key, key, "LEFT", "RIGHT", static_cast<double>(block.count()) / 1000.0);
                return b;
            }(),
            block);
        if (r.is_error()) {
            if (r.error_message().starts_with("WRONGTYPE")) continue;  // a string appeared: look again
            r.check();
        }
        if (!r.is_nil()) return JobResult::from_json(r.view());
    }
}

}  // namespace retools
