// GET /metrics: the Prometheus text exposition format (version 0.0.4).
#include <cmath>

#include <fmt/format.h>

#include "views.hpp"
#include "web.hpp"

namespace retools::tools {

using nlohmann::json;

namespace {

// Label values: backslash, double quote and line feed escaped; invalid UTF-8 replaced.
std::string label_value(const std::string& raw) {
    std::string text = json(raw).dump(-1, ' ', false, json::error_handler_t::replace);
    text = json::parse(text).get<std::string>();
    std::string out;
    for (char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out.push_back(c);
    }
    return out;
}

std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
    return fmt::format("{}", v);
}

class Exposition {
public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    void sample(std::string_view name, double value,
                std::initializer_list<std::pair<const char*, std::string>> labels = {}) {
        out_ += name;
        if (labels.size() != 0) {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                out_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", k, label_value(v));
                first = false;
            }
            out_ += '}';
        }
        out_ += ' ';
        out_ += number(value);
        out_ += '\n';
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

}  // namespace

std::string render_metrics(const Views& views) {
    json queues = views.queues();
    json workers = views.workers();
    json counters = views.counters();
    json cache = views.cache();
    const QueueManager& qm = views.queue_manager();
    Exposition e;

    e.family("retools_queue_length", "gauge", "Jobs waiting in the queue.");
    for (const auto& q : queues)
        e.sample("retools_queue_length", q["length"].get<double>(), {{"queue", q["name"]}});
    e.family("retools_queue_latency_seconds", "gauge",
             "Age of the oldest job in the queue (0 when empty; absent when its enqueue time is unknown).");
    for (const auto& q : queues)
        if (q["latency"].is_number())
            e.sample("retools_queue_latency_seconds", q["latency"].get<double>(), {{"queue", q["name"]}});

    std::size_t busy = 0;
    for (const auto& w : workers) busy += w["busy"].get<long long>() > 0;
    e.family("retools_workers", "gauge", "Live workers (registered or with a heartbeat).");
    e.sample("retools_workers", static_cast<double>(workers.size()));
    e.family("retools_workers_busy", "gauge", "Workers running at least one job.");
    e.sample("retools_workers_busy", static_cast<double>(busy));

    e.family("retools_jobs_processed_total", "counter",
             "Jobs finished by workers (succeeded, failed or aborted).");
    e.sample("retools_jobs_processed_total", counters["processed"].get<double>());
    e.family("retools_jobs_failed_total", "counter", "Jobs that failed for good.");
    e.sample("retools_jobs_failed_total", counters["failed"].get<double>());

    e.family("retools_failed_jobs", "gauge", "Entries in the failed-job list.");
    e.sample("retools_failed_jobs", static_cast<double>(qm.failed_count()));
    e.family("retools_scheduled_jobs", "gauge", "Jobs waiting for their due time (scheduled or retries).");
    e.sample("retools_scheduled_jobs", static_cast<double>(views.scheduled_count()));

    e.family("retools_cache_hits", "gauge", "Cache hits today (local date), per region and namespace.");
    for (const auto& r : cache)
        for (const auto& n : r["namespaces"])
            e.sample("retools_cache_hits", n["today"]["hits"].get<double>(),
                     {{"region", r["region"]}, {"namespace", n["namespace"]}});
    e.family("retools_cache_misses", "gauge", "Cache misses today (local date), per region and namespace.");
    for (const auto& r : cache)
        for (const auto& n : r["namespaces"])
            e.sample("retools_cache_misses", n["today"]["misses"].get<double>(),
                     {{"region", r["region"]}, {"namespace", n["namespace"]}});
    return e.take();
}

}  // namespace retools::tools
