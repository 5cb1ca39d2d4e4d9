#include "cli.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>

#include "format.hpp"
#include "views.hpp"
#include "web.hpp"

namespace retools::tools {

using nlohmann::json;

namespace {

constexpr const char* usage_text =
    "usage: retools [--url URL] [--json] [--yes] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  info                                  queues, workers, counters, failed and scheduled counts\n"
    "  queues                                every queue: length, latency, next job\n"
    "  workers                               live workers and what they run\n"
    "  failed [list]                         failed jobs (index, time, queue, job, error)\n"
    "  failed show N                         one failed job in full (payload included)\n"
    "  failed retry N | retry-all            put failed job N (or every one) back on its queue\n"
    "  failed remove N | clear               delete failed job N (or every one)\n"
    "  scheduled [list]                      jobs waiting for their due time\n"
    "  scheduled cancel ID                   remove scheduled job ID before it is due\n"
    "  periodic [list]                       periodic jobs: schedule, job, queue, next run\n"
    "  enqueue JOB --kwargs JSON [--queue Q] enqueue a job, print its id\n"
    "  stats REGION [NAMESPACE] [--date YYYY-MM-DD] [--days N]\n"
    "                                        cache hits, misses, hit ratio per namespace and key\n"
    "  regions                               cache regions with today's hits and misses\n"
    "  web [--listen HOST:PORT] [--auth-token T]\n"
    "                                        serve the dashboard (default 127.0.0.1:9181)\n"
    "\n"
    "options:\n"
    "  --url URL      Redis to use (default: $REDIS_URL, else redis://127.0.0.1:6379/0)\n"
    "  --json         print JSON instead of tables\n"
    "  --yes          do not ask before destructive commands (required when stdin is not a terminal)\n"
    "  -h, --help     this text\n";

/// Bad command-line arguments: usage and exit status 2.
class UsageError : public ConfigurationError {
public:
    using ConfigurationError::ConfigurationError;
};

struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::string> options;  // --name -> value ("" for flags)
    bool json = false;
    bool yes = false;

    bool has(const std::string& o) const { return options.count(o) != 0; }
    std::string get(const std::string& o) const {
        auto it = options.find(o);
        return it == options.end() ? std::string() : it->second;
    }
    void allow(std::initializer_list<const char*> names) const {
        for (const auto& [name, value] : options) {
            bool ok = name == "--url";
            for (const char* n : names) ok = ok || name == n;
            if (!ok)
                throw UsageError(fmt::format("option {} does not apply to '{}'", name, positional.at(0)));
        }
    }
    void arity(std::size_t min, std::size_t max) const {
        if (positional.size() < min + 1)
            throw UsageError(fmt::format("'{}' needs more arguments", positional.at(0)));
        if (positional.size() > max + 1)
            throw UsageError(fmt::format("unexpected argument '{}'", positional.at(max + 1)));
    }
};

Args parse(int argc, char** argv) {
    static const std::map<std::string, bool> known = {
        // name -> takes a value
        {"--url", true},  {"--kwargs", true}, {"--queue", true},     {"--date", true},
        {"--days", true}, {"--listen", true}, {"--auth-token", true}};
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string s = argv[i];
        if (s == "--json") {
            a.json = true;
        } else if (s == "--yes" || s == "-y") {
            a.yes = true;
        } else if (s == "-h" || s == "--help") {
            a.options["--help"] = "";
        } else if (s.starts_with("--")) {
            std::string name = s, value;
            bool inline_value = false;
            if (auto eq = s.find('='); eq != std::string::npos) {
                name = s.substr(0, eq);
                value = s.substr(eq + 1);
                inline_value = true;
            }
            auto it = known.find(name);
            if (it == known.end()) throw UsageError(fmt::format("unknown option {}", name));
            if (!inline_value) {
                if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", name));
                value = argv[++i];
            }
            a.options[name] = value;
        } else {
            a.positional.push_back(std::move(s));
        }
    }
    return a;
}

std::size_t index_arg(const std::string& text) {
    std::size_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
        throw UsageError(fmt::format("'{}' is not an index (a number from 'retools failed list')", text));
    return v;
}

int int_arg(const std::string& option, const std::string& text) {
    int v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v < 1)
        throw UsageError(fmt::format("{} needs a positive number, got '{}'", option, text));
    return v;
}

// ---- output ---------------------------------------------------------------------

void print_json(const json& j) {
    std::cout << dump(j, 2) << "\n";
}

/// A plain text table: header in capitals, columns two spaces apart.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                 std::string_view empty = "(none)") {
    std::vector<std::vector<std::string>> cells;
    cells.push_back(header);
    for (const auto& r : rows) {
        std::vector<std::string> safe;
        for (const auto& c : r) safe.push_back(terminal_safe(c, false));
        cells.push_back(std::move(safe));
    }
    auto width = [](const std::string& s) {
        std::size_t n = 0;
        for (char c : s) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
        return n;
    };
    std::vector<std::size_t> widths(header.size(), 0);
    for (const auto& r : cells)
        for (std::size_t i = 0; i < r.size() && i < widths.size(); ++i)
            widths[i] = std::max(widths[i], width(r[i]));
    for (const auto& r : cells) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(widths[i] - width(r[i]) + 2, ' ');
        }
        std::cout << line << "\n";
    }
    if (rows.empty()) std::cout << empty << "\n";
}

std::string join(const json& list, std::string_view sep = ",") {
    std::string out;
    for (const auto& e : list) {
        if (!out.empty()) out += sep;
        out += display(e);
    }
    return out;
}

std::string short_json(const json& j, std::size_t width = 60) {
    return truncate(dump(j), width);
}

std::vector<std::vector<std::string>> queue_rows(const json& queues) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& q : queues) {
        std::string next = "-";
        if (!q["jobs"].empty()) {
            const json& j = q["jobs"][0];
            next = j.contains("job") ? j["job"].get<std::string>() : "(unreadable payload)";
        }
        rows.push_back({q["name"].get<std::string>(), std::to_string(q["length"].get<long long>()),
                        format_age(q["latency"]), next});
    }
    return rows;
}

std::vector<std::vector<std::string>> worker_rows(const json& workers) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& w : workers) {
        const json& c = w["current"];
        std::string job = c.is_null() ? "-" : fmt::format("{} ({})", display(c["job"]), display(c["queue"]));
        rows.push_back({w["id"].get<std::string>(), display(w["host"]), display(w["pid"]),
                        format_time(w["started"]), join(w["queues"]), job,
                        c.is_null() ? "-" : format_age(c["running_for"]),
                        w["heartbeat_age"].is_null() ? "-" : format_age(w["heartbeat_age"]) + " ago"});
    }
    return rows;
}

const std::vector<std::string> queue_header = {"QUEUE", "LENGTH", "LATENCY", "NEXT JOB"};
const std::vector<std::string> worker_header = {"WORKER", "HOST",        "PID", "STARTED",
                                                "QUEUES", "CURRENT JOB", "FOR", "HEARTBEAT"};

// ---- confirmation -----------------------------------------------------------------

/// Asks on a terminal; without one, --yes is required (a script must say so).
void confirm(const Args& a, const std::string& what) {
    if (a.yes) return;
    if (!::isatty(STDIN_FILENO))
        throw UsageError(fmt::format("refusing to {} without --yes (stdin is not a terminal)", what));
    std::cerr << terminal_safe(fmt::format("{}? [y/N] ", what)) << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") throw Error("cancelled");
}

// ---- commands -------------------------------------------------------------------

int cmd_info(const Views& v, const Args& a) {
    a.arity(0, 0);
    a.allow({});
    json info = v.info();
    if (a.json) return print_json(info), 0;
    const json& c = info["counters"];
    std::cout << "Redis      " << info["server"].get<std::string>() << "\n";
    std::cout << fmt::format("Jobs       {} processed, {} failed (today: {} processed, {} failed)\n",
                             c["processed"].get<long long>(), c["failed"].get<long long>(),
                             c["processed_today"].get<long long>(), c["failed_today"].get<long long>());
    std::cout << fmt::format("Failed     {} in the failed list\n", info["failed_count"].get<long long>());
    std::cout << fmt::format("Scheduled  {} waiting\n", info["scheduled_count"].get<long long>());
    std::cout << fmt::format("Workers    {} live, {} busy\n\n", info["workers"].size(),
                             info["busy_workers"].get<long long>());
    print_table(queue_header, queue_rows(v.queues(1)), "(no queues)");
    std::cout << "\n";
    print_table(worker_header, worker_rows(info["workers"]), "(no workers)");
    return 0;
}

int cmd_queues(const Views& v, const Args& a) {
    a.arity(0, 0);
    a.allow({});
    json q = v.queues(1);
    if (a.json) return print_json(q), 0;
    print_table(queue_header, queue_rows(q), "(no queues)");
    return 0;
}

int cmd_workers(const Views& v, const Args& a) {
    a.arity(0, 0);
    a.allow({});
    json w = v.workers();
    if (a.json) return print_json(w), 0;
    print_table(worker_header, worker_rows(w), "(no workers)");
    return 0;
}

json failed_entry(const Views& v, std::size_t index) {
    json all = v.failed();
    if (index >= all.size())
        throw QueueError(fmt::format("no failed job {} (the failed list holds {})", index, all.size()));
    return all[index];
}

FailedJob as_failed_job(const json& f) {
    FailedJob job;
    job.payload = f["payload"].get<std::string>();
    job.queue = f["queue"].get<std::string>();
    job.error = f["error"].get<std::string>();
    job.worker = f["worker"].get<std::string>();
    job.failed_at = f["failed_at"].get<double>();
    job.entry = f["entry"].get<std::string>();
    return job;
}

int cmd_failed(const Views& v, const Args& a) {
    std::string sub = a.positional.size() > 1 ? a.positional[1] : "list";
    a.allow({});
    const QueueManager& qm = v.queue_manager();
    if (sub == "list") {
        a.arity(0, 1);
        json all = v.failed();
        if (a.json) {
            for (auto& f : all) f.erase("entry");
            return print_json(all), 0;
        }
        std::vector<std::vector<std::string>> rows;
        for (const auto& f : all)
            rows.push_back({std::to_string(f["index"].get<long long>()), format_time(f["failed_at"]),
                            f["queue"].get<std::string>(), display(f["job"]), display(f["job_id"]),
                            truncate(f["error"].get<std::string>(), 60)});
        print_table({"#", "FAILED AT", "QUEUE", "JOB", "JOB ID", "ERROR"}, rows, "(no failed jobs)");
        return 0;
    }
    if (sub == "show") {
        a.arity(2, 2);
        json f = failed_entry(v, index_arg(a.positional[2]));
        f.erase("entry");
        if (a.json) return print_json(f), 0;
        std::cout << terminal_safe(fmt::format(
            "index      {}\njob        {}\njob id     {}\nqueue      {}\nfailed at  {}\nworker     {}\nerror "
            "     {}\n",
            f["index"].get<long long>(), display(f["job"]), display(f["job_id"]), display(f["queue"]),
            format_time(f["failed_at"]), display(f["worker"]), display(f["error"])));
        json payload = json::parse(f["payload"].get<std::string>(), nullptr, false);
        std::cout << "payload\n"
                  << terminal_safe(payload.is_discarded() ? f["payload"].get<std::string>()
                                                          : dump(payload, 2))
                         // keep the pretty-printed payload's line breaks
                         .insert(0, "")
                  << "\n";
        return 0;
    }
    if (sub == "retry" || sub == "remove") {
        a.arity(2, 2);
        std::size_t index = index_arg(a.positional[2]);
        json f = failed_entry(v, index);
        FailedJob job = as_failed_job(f);
        if (sub == "remove") confirm(a, fmt::format("Remove failed job {} ({})", index, display(f["job"])));
        bool done = sub == "retry" ? qm.retry_failed(job) : qm.remove_failed(job);
        if (!done) throw QueueError(fmt::format("failed job {} is no longer in the failed list", index));
        json out = {{"index", index}, {"job_id", f["job_id"]}, {"job", f["job"]}, {"queue", f["queue"]}};
        out[sub == "retry" ? "retried" : "removed"] = true;
        if (a.json) return print_json(out), 0;
        std::cout << terminal_safe(
            sub == "retry" ? fmt::format("Retried {} {} on queue {}\n", display(f["job"]),
                                         display(f["job_id"]), display(f["queue"]))
                           : fmt::format("Removed {} {}\n", display(f["job"]), display(f["job_id"])));
        return 0;
    }
    if (sub == "retry-all" || sub == "clear") {
        a.arity(1, 1);
        std::size_t count = qm.failed_count();
        confirm(a, fmt::format("{} all {} failed jobs", sub == "clear" ? "Delete" : "Retry", count));
        std::size_t n = sub == "clear" ? qm.clear_failed() : qm.retry_all_failed();
        if (a.json) return print_json({{sub == "clear" ? "removed" : "retried", n}}), 0;
        std::cout << fmt::format("{} {} failed jobs\n", sub == "clear" ? "Removed" : "Retried", n);
        return 0;
    }
    throw UsageError(fmt::format("unknown 'failed' command '{}'", sub));
}

int cmd_scheduled(const Views& v, const Args& a) {
    std::string sub = a.positional.size() > 1 ? a.positional[1] : "list";
    a.allow({});
    if (sub == "list") {
        a.arity(0, 1);
        json all = v.scheduled();
        if (a.json) return print_json(all), 0;
        double now = now_seconds();
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : all)
            rows.push_back({s["job_id"].get<std::string>(), s["job"].get<std::string>(),
                            s["queue"].get<std::string>(), format_time(s["due"]),
                            format_until(s["due"].get<double>(), now), short_json(s["kwargs"])});
        print_table({"JOB ID", "JOB", "QUEUE", "DUE", "IN", "KWARGS"}, rows, "(no scheduled jobs)");
        return 0;
    }
    if (sub == "cancel") {
        a.arity(2, 2);
        const std::string& id = a.positional[2];
        confirm(a, fmt::format("Cancel scheduled job {}", id));
        if (!v.queue_manager().cancel_scheduled(id))
            throw QueueError(fmt::format("no scheduled job {} (never scheduled, or already due)", id));
        if (a.json) return print_json({{"job_id", id}, {"cancelled", true}}), 0;
        std::cout << terminal_safe(fmt::format("Cancelled {}\n", id));
        return 0;
    }
    throw UsageError(fmt::format("unknown 'scheduled' command '{}'", sub));
}

int cmd_periodic(const Views& v, const Args& a) {
    std::string sub = a.positional.size() > 1 ? a.positional[1] : "list";
    a.allow({});
    if (sub != "list") throw UsageError(fmt::format("unknown 'periodic' command '{}'", sub));
    a.arity(0, 1);
    json all = v.periodic();
    if (a.json) return print_json(all), 0;
    double now = now_seconds();
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : all)
        rows.push_back({p["id"].get<std::string>(), p["schedule"].get<std::string>(),
                        p["job"].get<std::string>(), p["queue"].get<std::string>(),
                        format_time(p["next_run"]), format_until(p["next_run"].get<double>(), now),
                        short_json(p["kwargs"])});
    print_table({"ID", "SCHEDULE", "JOB", "QUEUE", "NEXT RUN", "IN", "KWARGS"}, rows, "(no periodic jobs)");
    return 0;
}

int cmd_enqueue(const Views& v, const Args& a) {
    a.arity(1, 1);
    a.allow({"--kwargs", "--queue"});
    json kwargs = json::object();
    if (a.has("--kwargs")) {
        kwargs = json::parse(a.get("--kwargs"), nullptr, false);
        if (kwargs.is_discarded() || !kwargs.is_object())
            throw UsageError(fmt::format("--kwargs must be a JSON object, got '{}'", a.get("--kwargs")));
    }
    EnqueueOptions options{.queue_name = a.get("--queue")};
    if (a.has("--queue") && options.queue_name.empty()) throw UsageError("--queue needs a queue name");
    std::string id = v.queue_manager().enqueue(a.positional[1], kwargs, options);
    std::string queue =
        options.queue_name.empty() ? v.queue_manager().default_queue_name() : options.queue_name;
    if (a.json) return print_json({{"job_id", id}, {"job", a.positional[1]}, {"queue", queue}}), 0;
    std::cout << id << "\n";
    return 0;
}

std::vector<std::vector<std::string>> stat_rows(const json& s) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& n : s["namespaces"])
        for (const auto& k : n["keys"])
            rows.push_back(
                {n["namespace"].get<std::string>(), k["key"].get<std::string>(),
                 std::to_string(k["hits"].get<long long>()), std::to_string(k["misses"].get<long long>()),
                 std::to_string(k["calls"].get<long long>()), format_ratio(k["hit_ratio"].get<double>())});
    return rows;
}

int cmd_stats(const Views& v, const Args& a) {
    a.arity(1, 2);
    a.allow({"--date", "--days"});
    int days = a.has("--days") ? int_arg("--days", a.get("--days")) : 1;
    std::vector<std::string> dates;
    try {
        dates = date_range(a.get("--date"), days);
    } catch (const ConfigurationError& e) {
        throw UsageError(e.what());
    }
    json s = v.stats(a.positional[1], a.positional.size() > 2 ? a.positional[2] : std::string(), dates);
    if (a.json) return print_json(s), 0;
    std::cout << terminal_safe(fmt::format("Region {}, {}{}\n", s["region"].get<std::string>(), dates.back(),
                                           dates.size() > 1 ? " to " + dates.front() : std::string()));
    std::cout << fmt::format("Total {} hits, {} misses, hit ratio {}\n\n", s["hits"].get<long long>(),
                             s["misses"].get<long long>(), format_ratio(s["hit_ratio"].get<double>()));
    print_table({"NAMESPACE", "KEY", "HITS", "MISSES", "CALLS", "HIT RATIO"}, stat_rows(s),
                "(no cached keys)");
    return 0;
}

int cmd_regions(const Views& v, const Args& a) {
    a.arity(0, 0);
    a.allow({});
    json out = json::array();
    std::vector<std::string> today = date_range({}, 1);
    for (const std::string& r : v.regions()) {
        json s = v.stats(r, {}, today);
        out.push_back({{"region", r},
                       {"namespaces", s["namespaces"].size()},
                       {"hits", s["hits"]},
                       {"misses", s["misses"]},
                       {"calls", s["calls"]},
                       {"hit_ratio", s["hit_ratio"]}});
    }
    if (a.json) return print_json(out), 0;
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : out)
        rows.push_back({r["region"].get<std::string>(), std::to_string(r["namespaces"].get<long long>()),
                        std::to_string(r["hits"].get<long long>()),
                        std::to_string(r["misses"].get<long long>()),
                        format_ratio(r["hit_ratio"].get<double>())});
    print_table({"REGION", "NAMESPACES", "HITS TODAY", "MISSES TODAY", "HIT RATIO"}, rows,
                "(no cache regions)");
    return 0;
}

int cmd_web(const Views& v, const Args& a) {
    a.arity(0, 0);
    a.allow({"--listen", "--auth-token"});
    WebOptions o;
    if (a.has("--listen")) {
        std::string listen = a.get("--listen");
        auto colon = listen.rfind(':');
        if (colon == std::string::npos || colon == 0)
            throw UsageError(fmt::format("--listen needs HOST:PORT, got '{}'", listen));
        o.host = listen.substr(0, colon);
        if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']')
            o.host = o.host.substr(1, o.host.size() - 2);
        std::string port = listen.substr(colon + 1);
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), o.port);
        if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || o.port < 1 ||
            o.port > 65535)
            throw UsageError(fmt::format("--listen needs a port from 1 to 65535, got '{}'", port));
    }
    if (a.has("--auth-token")) {
        o.auth_token = a.get("--auth-token");
        if (o.auth_token.empty()) throw UsageError("--auth-token is empty");
    } else if (const char* env = std::getenv("RETOOLS_WEB_TOKEN"); env && *env) {
        o.auth_token = env;
    }
    if (!is_loopback(o.host) && o.auth_token.empty())
        throw UsageError(fmt::format(
            "refusing to listen on {} (not loopback) without --auth-token or RETOOLS_WEB_TOKEN", o.host));
    return serve(v, o);
}

}  // namespace

int run(int argc, char** argv) {
    Args a;
    try {
        a = parse(argc, argv);
        if (a.has("--help")) {
            std::cout << usage_text;
            return 0;
        }
        if (a.positional.empty()) throw UsageError("no command given");
        std::string url = a.get("--url");
        if (url.empty())
            if (const char* env = std::getenv("REDIS_URL"); env && *env) url = env;
        if (url.empty()) url = "redis://127.0.0.1:6379/0";
        Connection conn{url};
        global_connection() = conn;  // the cache statistics helpers read it
        Views views{conn};
        const std::string& cmd = a.positional[0];
        if (cmd == "info") return cmd_info(views, a);
        if (cmd == "queues") return cmd_queues(views, a);
        if (cmd == "workers") return cmd_workers(views, a);
        if (cmd == "failed") return cmd_failed(views, a);
        if (cmd == "scheduled") return cmd_scheduled(views, a);
        if (cmd == "periodic") return cmd_periodic(views, a);
        if (cmd == "enqueue") return cmd_enqueue(views, a);
        if (cmd == "stats") return cmd_stats(views, a);
        if (cmd == "regions") return cmd_regions(views, a);
        if (cmd == "web") return cmd_web(views, a);
        throw UsageError(fmt::format("unknown command '{}'", cmd));
    } catch (const UsageError& e) {
        std::cerr << "retools: " << terminal_safe(e.what()) << "\n\n" << usage_text;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "retools: " << terminal_safe(e.what()) << "\n";
        return 1;
    }
}

}  // namespace retools::tools
