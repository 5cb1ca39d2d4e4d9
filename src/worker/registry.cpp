// The worker registry keys of the original (retools:workers, retools:worker:<id>
// [:started|:queues]) and the recovery of dead workers' jobs.

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <mutex>
#include <optional>
#include <set>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>

#include "core/clock.hpp"
#include "queue/keys.hpp"
#include "worker/internal.hpp"

namespace retools {

namespace detail {

namespace {

// KEYS: 1 processing list, 2 retools:workers, 3 worker key, 4 :started, 5 :queues, 6 retools:failed
// ARGV: 1 worker id, 2 '1' to unregister the worker too, 3 now
// Takes from the tail and pushes on the head, so the jobs keep their order
// and come before anything enqueued since. An entry leaves the processing
// list only once it has landed: a queue key that refuses it (wrong type)
// files it, intact, in retools:failed; an error there stops the script with
// the entry still in place.
constexpr const char* requeue_source = R"lua(
local n = 0
while true do
  local e = redis.call('LINDEX', KEYS[1], -1)
  if not e then break end
  local nl = string.find(e, '\n', 1, true)
  local problem, payload, queue = 'unreadable processing-list entry', e, ''
  if nl and nl > 1 then
    local key = 'retools:queue:' .. string.sub(e, 1, nl - 1)
    local r = redis.pcall('LPUSH', key, string.sub(e, nl + 1))
    if type(r) == 'table' and r.err then
      problem, payload, queue = key .. ' refused the job: ' .. r.err, string.sub(e, nl + 1), string.sub(e, 1, nl - 1)
    else
      problem = nil
      n = n + 1
    end
  end
  if problem then
    redis.call('RPUSH', KEYS[6], cjson.encode({payload = payload, queue = queue, worker = ARGV[1],
      error = problem, failed_at = tonumber(ARGV[3])}))
  end
  redis.call('RPOP', KEYS[1])
end
if ARGV[2] == '1' then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
end
return n
)lua";

struct WorkerIdParts {
    std::string_view host;
    long pid = -1;
    std::string_view queues;
};

std::optional<WorkerIdParts> split_worker_id(std::string_view id) {
    auto a = id.find(':');
    if (a == std::string_view::npos) return std::nullopt;
    auto b = id.find(':', a + 1);
    if (b == std::string_view::npos) return std::nullopt;
    WorkerIdParts parts;
    parts.host = id.substr(0, a);
    auto pid_text = id.substr(a + 1, b - a - 1);
    long pid = 0;
    if (pid_text.empty()) return std::nullopt;
    for (char c : pid_text) {
        if (c < '0' || c > '9' || pid > (LONG_MAX - 9) / 10) return std::nullopt;
        pid = pid * 10 + (c - '0');
    }
    parts.pid = pid;
    parts.queues = id.substr(b + 1);
    return parts;
}

bool process_alive(long pid) {
    if (pid <= 0) return false;
    if (::kill(static_cast<pid_t>(pid), 0) == 0) return true;
    return errno == EPERM;  // exists, owned by someone else
}

std::vector<std::string> split_commas(std::string_view text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto comma = text.find(',', start);
        out.emplace_back(
            text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return out;
}

}  // namespace

std::string hostname() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
    return buf;
}

std::size_t requeue_processing(const Connection& conn, std::string_view worker_id, bool unregister) {
    static const Script script{requeue_source};
    Reply r = script(
        conn,
        {queue_keys::processing(worker_id), queue_keys::workers, queue_keys::worker(worker_id),
         queue_keys::worker_started(worker_id), queue_keys::worker_queues(worker_id), queue_keys::failed},
        worker_id, unregister ? "1" : "0", python_repr(unix_now()));
    return static_cast<std::size_t>(r.as_integer());
}

namespace {
std::mutex active_mutex;
std::set<std::string, std::less<>>& active_ids() {
    static auto* ids = new std::set<std::string, std::less<>>;
    return *ids;
}
bool is_active(std::string_view id) {
    std::lock_guard lock(active_mutex);
    return active_ids().count(id) != 0;
}
}  // namespace

bool claim_worker_id(const std::string& id) {
    std::lock_guard lock(active_mutex);
    return active_ids().insert(id).second;
}

void release_worker_id(const std::string& id) {
    std::lock_guard lock(active_mutex);
    active_ids().erase(id);
}

std::size_t prune_dead_workers(const Connection& conn) {
    std::string host = hostname();
    std::size_t requeued = 0;
    for (const Reply& member : conn.command("SMEMBERS", queue_keys::workers).as_array()) {
        std::string id = member.as_string();
        auto parts = split_worker_id(id);
        if (!parts || parts->host != host || is_active(id)) continue;
        if (parts->pid != static_cast<long>(::getpid()) && process_alive(parts->pid)) continue;
        // Our own pid but not working here: a previous process that had our pid.
        requeued += requeue_processing(conn, id, true);
    }
    return requeued;
}

std::vector<std::string> split_queue_names(std::string_view text) {
    return split_commas(text);
}

}  // namespace detail

// ---- Worker members -------------------------------------------------------------------

std::vector<std::string> Worker::get_worker_ids(const Connection& conn) {
    std::vector<std::string> ids;
    for (const Reply& r : conn.command("SMEMBERS", detail::queue_keys::workers).as_array())
        ids.push_back(r.as_string());
    return ids;
}

std::vector<Worker> Worker::get_workers(const Connection& conn) {
    std::vector<Worker> workers;
    for (const auto& id : get_worker_ids(conn)) {
        try {
            workers.push_back(from_id(id, conn));
        } catch (const QueueError&) {
            // unregistered meanwhile
        }
    }
    return workers;
}

std::size_t Worker::requeue_orphans(const Connection& conn) {
    std::size_t requeued = detail::prune_dead_workers(conn);
    // Processing lists whose worker is not registered at all (unregistered by
    // a Python worker's pruning, or a crash between two steps).
    std::string cursor = "0";
    std::string pattern = std::string(detail::queue_keys::processing_prefix) + "*";
    do {
        Reply r = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 100);
        cursor = r[0].as_string();
        for (const Reply& key : r[1].as_array()) {
            std::string_view id = key.view().substr(detail::queue_keys::processing_prefix.size());
            if (conn.command("SISMEMBER", detail::queue_keys::workers, id).as_integer() == 1) continue;
            requeued += detail::requeue_processing(conn, id, false);
        }
    } while (cursor != "0");
    return requeued;
}

}  // namespace retools
