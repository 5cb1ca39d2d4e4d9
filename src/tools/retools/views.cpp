#include "views.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <set>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>
#include <retools/worker.hpp>

#include "queue/keys.hpp"
#include "queue/topology.hpp"

namespace retools::tools {

using nlohmann::json;

namespace {

namespace queue_keys = detail::queue_keys;

// The original's worker keys (shared with Python workers) and retools' own.
std::string worker_key(std::string_view id) {
    return queue_keys::worker(id);
}
std::string processing_key(std::string_view id) {
    return queue_keys::processing(id, "", false);
}

}  // namespace

// What differs on a Redis Cluster for the views: keys in many slots (no
// MGET, SCAN sees one node), one processing list per worker and queue and
// one scheduled set per queue under the queue's hash tag (queue/keys.hpp).
class ViewTopology {
public:
    virtual ~ViewTopology() = default;
    /// The values of `keys`, in order, in one round trip: MGET, or on a
    /// cluster (where the keys sit in different slots) a pipeline of GETs
    /// split per node.
    virtual std::vector<Reply> get_all(const Connection& conn,
                                       const std::vector<std::string>& keys) const = 0;
    /// Adds to `ids` the workers a SCAN of heartbeat keys may have missed.
    virtual void add_unscanned_workers(const Connection& conn, std::set<std::string>& ids) const = 0;
    /// Jobs worker `id` holds besides its processing list of one node.
    virtual long long held_per_queue(const Connection& conn, std::string_view id,
                                     const json& queues) const = 0;
    /// Scheduled jobs besides those of `retools:delayed`.
    virtual long long scheduled_per_queue(const Connection& conn) const = 0;
};

namespace {

class SingleNodeViews final : public ViewTopology {
public:
    std::vector<Reply> get_all(const Connection& conn, const std::vector<std::string>& keys) const override {
        return conn.command("MGET", keys).as_array();
    }
    void add_unscanned_workers(const Connection&, std::set<std::string>&) const override {}
    long long held_per_queue(const Connection&, std::string_view, const json&) const override { return 0; }
    long long scheduled_per_queue(const Connection&) const override { return 0; }
};

class ClusterViews final : public ViewTopology {
public:
    std::vector<Reply> get_all(const Connection& conn, const std::vector<std::string>& keys) const override {
        Pipeline p;
        for (const std::string& k : keys) p.command("GET", k);
        return conn.execute(p);
    }
    void add_unscanned_workers(const Connection& conn, std::set<std::string>& ids) const override {
        // SCAN saw one node; the beat index lists every worker with a heartbeat.
        for (const Reply& r : conn.command("ZRANGE", "retools:heartbeats", 0, -1).as_array())
            ids.insert(r.as_string());
    }
    long long held_per_queue(const Connection& conn, std::string_view id, const json& queues) const override {
        const detail::queue::Topology& keys = detail::queue::cluster_topology();
        long long held = 0;
        Pipeline lists;
        for (const json& q : queues)
            if (q.is_string()) lists.command("LLEN", keys.processing_key(id, q.get<std::string>()));
        for (const Reply& n : conn.execute(lists))
            if (n.is_integer()) held += n.as_integer();
        return held;
    }
    long long scheduled_per_queue(const Connection& conn) const override {
        const detail::queue::Topology& keys = detail::queue::cluster_topology();
        long long n = 0;
        Pipeline p;
        for (const Reply& q : conn.command("SMEMBERS", "retools:queues").as_array())
            p.command("ZCARD", keys.delayed_key(q.view()));
        for (const Reply& r : conn.execute(p))
            if (r.is_integer()) n += r.as_integer();
        return n;
    }
};

const ViewTopology& view_topology(const Connection& conn) {
    static const SingleNodeViews single_node;
    static const ClusterViews cluster;
    if (conn.is_cluster()) return cluster;
    return single_node;
}

std::optional<double> number_of(const Reply& r) {
    if (!r.is_string()) return std::nullopt;
    try {
        double v = r.as_double();
        if (std::isfinite(v)) return v;
    } catch (const Error&) {}
    return std::nullopt;
}

std::int64_t count_of(const Reply& r) {
    if (!r.is_string()) return 0;
    std::string_view t = r.view();
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    return ec == std::errc{} && end == t.data() + t.size() ? v : 0;
}

json parse_or_null(std::string_view text) {
    json j = json::parse(text, nullptr, false);
    return j.is_discarded() ? json() : j;
}

json number_or_null(const json& obj, const char* field) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(field);
    if (it == obj.end() || !it->is_number()) return nullptr;
    return *it;
}

std::string string_field(const json& obj, const char* field) {
    if (!obj.is_object()) return {};
    auto it = obj.find(field);
    return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A payload as the views show it; never throws.
json job_of(std::string_view payload) {
    json p = parse_or_null(payload);
    if (!p.is_object()) return {{"payload", std::string(payload)}, {"error", "not a JSON object"}};
    json out = {{"job_id", string_field(p, "job_id")},
                {"job", string_field(p, "job")},
                {"kwargs", p.contains("kwargs") ? p["kwargs"] : json::object()},
                {"enqueued_at", number_or_null(p.value("metadata", json::object()), "enqueued_at")}};
    return out;
}

json stats_json(const CacheStats& s) {
    return {{"hits", s.hits}, {"misses", s.misses}, {"calls", s.calls()}, {"hit_ratio", s.hit_ratio()}};
}

void sort_by_calls(json& list) {
    std::stable_sort(list.begin(), list.end(), [](const json& a, const json& b) {
        return a["calls"].get<long long>() > b["calls"].get<long long>();
    });
}

}  // namespace

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string utc_stamp(double t, bool hour) {
    std::time_t s = static_cast<std::time_t>(std::floor(t));
    std::tm tm{};
    gmtime_r(&s, &tm);
    if (hour)
        return fmt::format("{:04}-{:02}-{:02}T{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                           tm.tm_hour);
    return fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

std::vector<std::string> date_range(std::string_view last, int days) {
    using namespace std::chrono;
    if (days < 1) throw ConfigurationError(fmt::format("--days must be at least 1, got {}", days));
    year_month_day ymd;
    if (last.empty()) {
        std::time_t s = system_clock::to_time_t(system_clock::now());
        std::tm tm{};
        localtime_r(&s, &tm);
        ymd = year{tm.tm_year + 1900} / month{static_cast<unsigned>(tm.tm_mon + 1)} /
              day{static_cast<unsigned>(tm.tm_mday)};
    } else {
        int y = 0;
        unsigned m = 0, d = 0;
        bool ok = last.size() == 10 && last[4] == '-' && last[7] == '-';
        auto parse = [&](std::size_t from, std::size_t n, auto& out) {
            auto [end, ec] = std::from_chars(last.data() + from, last.data() + from + n, out);
            ok = ok && ec == std::errc{} && end == last.data() + from + n;
        };
        if (ok) {
            parse(0, 4, y);
            parse(5, 2, m);
            parse(8, 2, d);
        }
        ymd = year{y} / month{m} / day{d};
        if (!ok || !ymd.ok())
            throw ConfigurationError(fmt::format("date '{}' is not a valid YYYY-MM-DD date", last));
    }
    std::vector<std::string> out;
    sys_days first{ymd};
    for (int i = 0; i < days; ++i) {
        year_month_day d{first - std::chrono::days{i}};
        out.push_back(fmt::format("{:04}-{:02}-{:02}", static_cast<int>(d.year()),
                                  static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day())));
    }
    return out;
}

std::string dump(const json& j, int indent) {
    return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

Views::Views(Connection conn) : conn_(conn), qm_(std::move(conn)), topology_(&view_topology(conn_)) {}

std::string Views::server() const {
    return conn_.options().describe();
}

json Views::queues(std::size_t peek) const {
    std::vector<std::string> names = qm_.queue_names();
    std::sort(names.begin(), names.end());
    double now = now_seconds();
    json out = json::array();
    for (const std::string& name : names) {
        if (name.empty() || name.find_first_of(":,") != std::string::npos)
            continue;  // not a queue retools can use
        std::size_t length = qm_.queue_length(name);
        std::vector<std::string> head = length == 0 ? std::vector<std::string>{}
                                                    : qm_.peek_payloads(name, std::max<std::size_t>(peek, 1));
        json latency = 0.0;
        if (!head.empty()) {
            json first = job_of(head.front());
            latency = first.value("enqueued_at", json()).is_number()
                          ? json(std::max(0.0, now - first["enqueued_at"].get<double>()))
                          : json();
        }
        json jobs = json::array();
        for (std::size_t i = 0; i < head.size() && i < peek; ++i) jobs.push_back(job_of(head[i]));
        out.push_back({{"name", name}, {"length", length}, {"latency", latency}, {"jobs", jobs}});
    }
    return out;
}

json Views::workers() const {
    std::set<std::string> ids;
    for (std::string& id : Worker::get_worker_ids(conn_)) ids.insert(std::move(id));
    // Heartbeat keys: SCAN, never KEYS (which blocks a big server).
    std::string cursor = "0";
    std::string pattern = std::string(stat_keys::heartbeat_prefix) + "*";
    do {
        Reply r = conn_.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000);
        cursor = r[0].as_string();
        for (const Reply& k : r[1].as_array())
            ids.insert(k.as_string().substr(stat_keys::heartbeat_prefix.size()));
    } while (cursor != "0");
    topology_->add_unscanned_workers(conn_, ids);

    json out = json::array();
    if (ids.empty()) return out;
    Pipeline p;
    for (const std::string& id : ids) {
        p.command("GET", std::string(stat_keys::heartbeat_prefix) + id)
            .command("GET", worker_key(id))
            .command("GET", worker_key(id) + ":started")
            .command("GET", worker_key(id) + ":queues")
            .command("LLEN", processing_key(id));
    }
    std::vector<Reply> replies = conn_.execute(p);
    double now = now_seconds();
    std::size_t i = 0;
    for (const std::string& id : ids) {
        const Reply& beat = replies[i];
        const Reply& current = replies[i + 1];
        const Reply& started = replies[i + 2];
        const Reply& queues = replies[i + 3];
        const Reply& processing = replies[i + 4];
        i += 5;
        json hb = beat.is_string() ? parse_or_null(beat.view()) : json();
        if (!hb.is_object()) hb = json();
        // Defaults from the id, `<host>:<pid>:<queues>`, overridden by the heartbeat.
        json w = {{"id", id}, {"host", ""}, {"pid", nullptr}, {"queues", json::array()}};
        auto a = id.find(':');
        auto b = a == std::string::npos ? std::string::npos : id.find(':', a + 1);
        if (b != std::string::npos) {
            w["host"] = id.substr(0, a);
            long pid = 0;
            auto [end, ec] = std::from_chars(id.data() + a + 1, id.data() + b, pid);
            if (ec == std::errc{} && end == id.data() + b) w["pid"] = pid;
        }
        std::string queue_text = queues.is_string()       ? queues.as_string()
                                 : b != std::string::npos ? id.substr(b + 1)
                                                          : std::string();
        for (std::size_t s = 0; !queue_text.empty();) {
            auto c = queue_text.find(',', s);
            w["queues"].push_back(queue_text.substr(s, c == std::string::npos ? std::string::npos : c - s));
            if (c == std::string::npos) break;
            s = c + 1;
        }
        w["started"] = number_of(started) ? json(*number_of(started)) : json();
        w["kind"] = hb.is_object() ? "retools" : "registered";
        w["heartbeat_age"] = nullptr;
        w["busy"] = nullptr;
        w["threads"] = nullptr;
        w["mode"] = nullptr;
        w["version"] = nullptr;
        if (hb.is_object()) {
            if (auto h = string_field(hb, "host"); !h.empty()) w["host"] = h;
            if (hb.contains("pid") && hb["pid"].is_number_integer()) w["pid"] = hb["pid"];
            if (hb.contains("queues") && hb["queues"].is_array()) w["queues"] = hb["queues"];
            if (hb.contains("started") && hb["started"].is_number()) w["started"] = hb["started"];
            if (hb.contains("beat") && hb["beat"].is_number())
                w["heartbeat_age"] = std::max(0.0, now - hb["beat"].get<double>());
            for (const char* f : {"busy", "threads"})
                if (hb.contains(f) && hb[f].is_number_integer()) w[f] = hb[f];
            for (const char* f : {"mode", "version"})
                if (hb.contains(f) && hb[f].is_string()) w[f] = hb[f];
        }
        long long held = processing.is_integer() ? processing.as_integer() : 0;
        held += topology_->held_per_queue(conn_, id, w["queues"]);
        w["processing"] = held;
        w["current"] = nullptr;
        if (current.is_string()) {
            json c = parse_or_null(current.view());
            if (c.is_object()) {
                std::string queue = string_field(c, "queue");
                if (queue.starts_with("retools:queue:")) queue.erase(0, 14);
                json payload = c.value("payload", json());
                json job = payload.is_object()   ? job_of(dump(payload))
                           : payload.is_string() ? job_of(payload.get<std::string>())
                                                 : json::object();
                json run_at = number_or_null(c, "run_at");
                w["current"] = {
                    {"queue", queue},
                    {"job_id", job.value("job_id", "")},
                    {"job", job.value("job", "")},
                    {"kwargs", job.value("kwargs", json::object())},
                    {"run_at", run_at},
                    {"running_for",
                     run_at.is_number() ? json(std::max(0.0, now - run_at.get<double>())) : json()}};
            }
        }
        if (w["busy"].is_null()) w["busy"] = w["current"].is_null() ? 0 : 1;
        out.push_back(std::move(w));
    }
    return out;
}

json Views::counters() const {
    std::string today = utc_stamp(now_seconds());
    std::vector<Reply> r =
        topology_->get_all(conn_, {std::string(stat_keys::processed), std::string(stat_keys::failed),
                                   fmt::format("{}:{}", stat_keys::processed, today),
                                   fmt::format("{}:{}", stat_keys::failed, today)});
    return {{"processed", count_of(r[0])},
            {"failed", count_of(r[1])},
            {"processed_today", count_of(r[2])},
            {"failed_today", count_of(r[3])}};
}

json Views::history(int hours) const {
    json out = json::array();
    if (hours <= 0) return out;
    double now = now_seconds();
    std::vector<std::string> stamps, keys;
    for (int h = hours - 1; h >= 0; --h) {
        std::string s = utc_stamp(now - 3600.0 * h, true);
        stamps.push_back(s);
        keys.push_back(fmt::format("{}:{}", stat_keys::processed, s));
        keys.push_back(fmt::format("{}:{}", stat_keys::failed, s));
    }
    std::vector<Reply> r = topology_->get_all(conn_, keys);
    for (std::size_t i = 0; i < stamps.size(); ++i)
        out.push_back(
            {{"hour", stamps[i]}, {"processed", count_of(r[2 * i])}, {"failed", count_of(r[2 * i + 1])}});
    return out;
}

json Views::failed() const {
    json out = json::array();
    std::size_t index = 0;
    for (const FailedJob& f : qm_.failed_jobs()) {
        json job = job_of(f.payload);
        out.push_back({{"index", index++},
                       {"job_id", job.value("job_id", "")},
                       {"job", job.value("job", "")},
                       {"queue", f.queue},
                       {"error", f.error},
                       {"worker", f.worker},
                       {"failed_at", f.failed_at},
                       {"payload", f.payload},
                       {"entry", f.entry}});
    }
    return out;
}

json Views::scheduled() const {
    json out = json::array();
    for (const ScheduledJob& s : qm_.scheduled_jobs()) {
        out.push_back({{"job_id", s.job.id()},
                       {"job", s.job.name()},
                       {"queue", s.job.queue()},
                       {"kwargs", s.job.kwargs()},
                       {"due", std::chrono::duration<double>(s.due.time_since_epoch()).count()}});
    }
    return out;
}

json Views::periodic() const {
    json out = json::array();
    for (const PeriodicJob& p : qm_.periodic_jobs()) {
        out.push_back({{"id", p.id},
                       {"schedule", p.schedule},
                       {"job", p.job_name},
                       {"queue", p.queue},
                       {"kwargs", p.kwargs},
                       {"next_run", std::chrono::duration<double>(p.next_run.time_since_epoch()).count()}});
    }
    return out;
}

std::vector<std::string> Views::regions() const {
    return stored_regions(conn_);
}

json Views::stats(std::string_view region, std::string_view ns, const std::vector<std::string>& dates) const {
    // Sum the days: namespace -> key -> stats.
    std::map<std::string, std::map<std::string, CacheStats>> sums;
    for (const std::string& day : dates) {
        if (!ns.empty()) {
            NamespaceStats s = namespace_stats(region, ns, day);
            auto& keys = sums[std::string(ns)];
            for (const auto& [k, v] : s.keys) keys[k] += v;
        } else {
            RegionStats s = region_stats(region, day);
            for (const auto& [n, nstats] : s.namespaces) {
                auto& keys = sums[n];
                for (const auto& [k, v] : nstats.keys) keys[k] += v;
            }
        }
    }
    CacheStats total;
    json namespaces = json::array();
    for (const auto& [n, keys] : sums) {
        CacheStats nt;
        json key_list = json::array();
        for (const auto& [k, v] : keys) {
            nt += v;
            json e = stats_json(v);
            e["key"] = k;
            key_list.push_back(std::move(e));
        }
        sort_by_calls(key_list);
        total += nt;
        json e = stats_json(nt);
        e["namespace"] = n;
        e["keys"] = std::move(key_list);
        namespaces.push_back(std::move(e));
    }
    sort_by_calls(namespaces);
    json out = stats_json(total);
    out["region"] = region;
    out["dates"] = dates;
    out["namespaces"] = std::move(namespaces);
    return out;
}

json Views::cache() const {
    json out = json::array();
    std::vector<std::string> today = date_range({}, 1);
    std::vector<std::string> week = date_range({}, 7);
    for (const std::string& region : regions()) {
        json t = stats(region, {}, today);
        json w = stats(region, {}, week);
        std::map<std::string, json> week_by_ns;
        for (const json& n : w["namespaces"]) week_by_ns[n["namespace"].get<std::string>()] = n;
        json namespaces = json::array();
        for (const json& n : t["namespaces"]) {
            const json& wn = week_by_ns[n["namespace"].get<std::string>()];
            namespaces.push_back({{"namespace", n["namespace"]},
                                  {"keys", n["keys"].size()},
                                  {"today",
                                   {{"hits", n["hits"]},
                                    {"misses", n["misses"]},
                                    {"calls", n["calls"]},
                                    {"hit_ratio", n["hit_ratio"]}}},
                                  {"week",
                                   {{"hits", wn.value("hits", 0)},
                                    {"misses", wn.value("misses", 0)},
                                    {"calls", wn.value("calls", 0)},
                                    {"hit_ratio", wn.value("hit_ratio", 0.0)}}}});
        }
        out.push_back({{"region", region},
                       {"today",
                        {{"hits", t["hits"]},
                         {"misses", t["misses"]},
                         {"calls", t["calls"]},
                         {"hit_ratio", t["hit_ratio"]}}},
                       {"week",
                        {{"hits", w["hits"]},
                         {"misses", w["misses"]},
                         {"calls", w["calls"]},
                         {"hit_ratio", w["hit_ratio"]}}},
                       {"namespaces", std::move(namespaces)}});
    }
    return out;
}

json Views::info() const {
    json ws = workers();
    std::size_t busy = 0;
    for (const json& w : ws) busy += w["busy"].get<long long>() > 0 ? 1 : 0;
    return {{"server", server()},
            {"counters", counters()},
            {"queues", queues()},
            {"workers", ws},
            {"busy_workers", busy},
            {"failed_count", qm_.failed_count()},
            {"scheduled_count", scheduled_count()}};
}

long long Views::scheduled_count() const {
    long long n = conn_.command("ZCARD", "retools:delayed").as_integer();
    return n + topology_->scheduled_per_queue(conn_);
}

}  // namespace retools::tools
