#include "pages.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "format.hpp"

namespace retools::tools {

using nlohmann::json;

namespace {

// ---- model helpers ----------------------------------------------------------------

json code(std::string text) {
    return {{"code", std::move(text)}};
}

json action(std::string label, std::string path, json fields, std::string confirm = {}, bool danger = false) {
    return {{"label", std::move(label)},
            {"path", std::move(path)},
            {"fields", std::move(fields)},
            {"confirm", std::move(confirm)},
            {"danger", danger}};
}

json table(std::string title, std::vector<std::string> columns, json rows, std::string empty) {
    return {{"type", "table"},
            {"title", std::move(title)},
            {"columns", std::move(columns)},
            {"rows", std::move(rows)},
            {"empty", std::move(empty)}};
}

std::string num(const json& v) {
    return v.is_number() ? dump(v) : "-";
}

std::string queue_label(const json& q) {
    return q["name"].get<std::string>();
}

// Kwargs as compact JSON (they wrap in their cell).
json pretty(const json& j) {
    return code(dump(j));
}

json overview_model(const json& d) {
    const json& c = d["counters"];
    json cards = {{"type", "cards"},
                  {"title", "Jobs"},
                  {"items",
                   {{{"label", "Processed"}, {"value", num(c["processed"])}},
                    {{"label", "Failed"}, {"value", num(c["failed"])}},
                    {{"label", "Processed today"}, {"value", num(c["processed_today"])}},
                    {{"label", "Failed today"}, {"value", num(c["failed_today"])}},
                    {{"label", "In the failed list"}, {"value", num(d["failed_count"])}},
                    {{"label", "Scheduled"}, {"value", num(d["scheduled_count"])}},
                    {{"label", "Workers"}, {"value", std::to_string(d["workers"].size())}},
                    {{"label", "Busy workers"}, {"value", num(d["busy_workers"])}}}}};
    json items = json::array();
    for (const auto& h : d["history"]) {
        std::string hour = h["hour"].get<std::string>();
        items.push_back({{"label", hour.substr(hour.size() - 2)},
                         {"title", hour + ":00 UTC"},
                         {"values", {h["processed"], h["failed"]}}});
    }
    json chart = {{"type", "chart"},          {"title", "Last 24 hours (UTC)"},
                  {"orientation", "columns"}, {"series", {"processed", "failed"}},
                  {"format", "count"},        {"items", items}};
    json qrows = json::array();
    for (const auto& q : d["queues"])
        qrows.push_back({queue_label(q), num(q["length"]), format_age(q["latency"])});
    json wrows = json::array();
    for (const auto& w : d["workers"]) {
        if (w["busy"].get<long long>() == 0) continue;
        const json& cur = w["current"];
        wrows.push_back({w["id"], cur.is_null() ? "-" : display(cur["job"]),
                         cur.is_null() ? "-" : display(cur["queue"]),
                         cur.is_null() ? "-" : format_age(cur["running_for"])});
    }
    return {{"sections",
             {cards, chart, table("Queues", {"Queue", "Length", "Latency"}, qrows, "No queues."),
              table("Busy workers", {"Worker", "Job", "Queue", "For"}, wrows, "No worker is busy.")}}};
}

json queues_model(const json& d) {
    json rows = json::array();
    json sections = json::array();
    for (const auto& q : d) rows.push_back({queue_label(q), num(q["length"]), format_age(q["latency"])});
    sections.push_back(table("Queues", {"Queue", "Length", "Latency"}, rows, "No queues."));
    for (const auto& q : d) {
        json jobs = json::array();
        for (const auto& j : q["jobs"]) {
            if (j.contains("error"))
                jobs.push_back({"-", "(unreadable payload)", code(j["payload"].get<std::string>()), "-"});
            else
                jobs.push_back({j["job_id"], j["job"], pretty(j["kwargs"]), format_time(j["enqueued_at"])});
        }
        sections.push_back(table(fmt::format("Queue {}: first {} of {}", queue_label(q), q["jobs"].size(),
                                             q["length"].get<long long>()),
                                 {"Job ID", "Job", "Kwargs", "Enqueued"}, jobs, "Empty."));
    }
    return {{"sections", sections}};
}

json workers_model(const json& d) {
    json rows = json::array();
    for (const auto& w : d) {
        const json& cur = w["current"];
        std::string busy = num(w["busy"]);
        if (w["threads"].is_number()) busy += " / " + num(w["threads"]);
        if (w["mode"].is_string()) busy += " (" + w["mode"].get<std::string>() + ")";
        std::string queues;
        for (const auto& n : w["queues"]) queues += (queues.empty() ? "" : ", ") + display(n);
        rows.push_back(
            {w["id"], w["kind"], format_time(w["started"]), queues, busy,
             cur.is_null() ? json("-") : json(display(cur["job"]) + " (" + display(cur["queue"]) + ")"),
             cur.is_null() ? json("-") : pretty(cur["kwargs"]),
             cur.is_null() ? "-" : format_age(cur["running_for"]),
             w["heartbeat_age"].is_null() ? "-" : format_age(w["heartbeat_age"]) + " ago"});
    }
    return {
        {"sections",
         {table("Workers",
                {"Worker", "Kind", "Started", "Queues", "Busy", "Current job", "Kwargs", "For", "Heartbeat"},
                rows, "No live workers.")}}};
}

constexpr std::size_t max_failed_rows = 200;

json failed_model(const json& d) {
    json rows = json::array();
    for (const auto& f : d) {
        if (rows.size() == max_failed_rows) break;  // the page stays small; /api/failed has them all
        json fields = {{"entry", f["entry"]}};
        rows.push_back({num(f["index"]),
                        format_time(f["failed_at"]),
                        f["queue"],
                        display(f["job"]),
                        code(f["error"].get<std::string>()),
                        code(f["payload"].get<std::string>()),
                        {{"actions",
                          {action("Retry", "/failed/retry", fields),
                           action("Remove", "/failed/remove", fields, "Remove this failed job?", true)}}}});
    }
    json sections = json::array();
    if (!d.empty())
        sections.push_back({{"type", "actions"},
                            {"title", ""},
                            {"actions",
                             {action("Retry all", "/failed/retry-all", json::object(),
                                     fmt::format("Retry all {} failed jobs?", d.size())),
                              action("Clear all", "/failed/clear", json::object(),
                                     fmt::format("Delete all {} failed jobs?", d.size()), true)}}});
    sections.push_back(
        table(d.size() > max_failed_rows
                  ? fmt::format("Failed jobs ({}, the oldest {} shown)", d.size(), max_failed_rows)
                  : fmt::format("Failed jobs ({})", d.size()),
              {"#", "Failed at", "Queue", "Job", "Error", "Payload", ""}, rows, "No failed jobs."));
    return {{"sections", sections}};
}

json scheduled_model(const json& d) {
    json rows = json::array();
    double now = now_seconds();
    for (const auto& s : d)
        rows.push_back({s["job_id"],
                        s["job"],
                        s["queue"],
                        format_time(s["due"]),
                        format_until(s["due"].get<double>(), now),
                        pretty(s["kwargs"]),
                        {{"actions",
                          {action("Cancel", "/scheduled/cancel", {{"job_id", s["job_id"]}},
                                  "Cancel this scheduled job?", true)}}}});
    return {
        {"sections",
         {table(fmt::format("Scheduled jobs ({})", d.size()),
                {"Job ID", "Job", "Queue", "Due (UTC)", "In", "Kwargs", ""}, rows, "No scheduled jobs.")}}};
}

json periodic_model(const json& d) {
    json rows = json::array();
    double now = now_seconds();
    for (const auto& p : d)
        rows.push_back({p["id"], p["schedule"], p["job"], p["queue"], format_time(p["next_run"]),
                        format_until(p["next_run"].get<double>(), now), pretty(p["kwargs"])});
    return {{"sections",
             {table(fmt::format("Periodic jobs ({})", d.size()),
                    {"ID", "Schedule", "Job", "Queue", "Next run (UTC)", "In", "Kwargs"}, rows,
                    "No periodic jobs.")}}};
}

json cache_model(const json& d) {
    json sections = json::array();
    json items = json::array();
    for (const auto& r : d)
        for (const auto& n : r["namespaces"])
            items.push_back(
                {{"label", r["region"].get<std::string>() + " / " + n["namespace"].get<std::string>()},
                 {"title", ""},
                 {"values", {n["today"]["hit_ratio"], n["week"]["hit_ratio"]}}});
    sections.push_back({{"type", "chart"},
                        {"title", "Hit ratio by namespace"},
                        {"orientation", "bars"},
                        {"series", {"today", "7 days"}},
                        {"format", "ratio"},
                        {"items", items}});
    for (const auto& r : d) {
        json rows = json::array();
        for (const auto& n : r["namespaces"])
            rows.push_back({n["namespace"], num(n["keys"]), num(n["today"]["hits"]),
                            num(n["today"]["misses"]), format_ratio(n["today"]["hit_ratio"].get<double>()),
                            num(n["week"]["hits"]), num(n["week"]["misses"]),
                            format_ratio(n["week"]["hit_ratio"].get<double>())});
        sections.push_back(
            table(fmt::format("Region {}: {} hits, {} misses today ({})", r["region"].get<std::string>(),
                              num(r["today"]["hits"]), num(r["today"]["misses"]),
                              format_ratio(r["today"]["hit_ratio"].get<double>())),
                  {"Namespace", "Keys", "Hits today", "Misses today", "Ratio today", "Hits 7 days",
                   "Misses 7 days", "Ratio 7 days"},
                  rows, "No namespaces."));
    }
    if (d.empty()) sections.push_back(table("Regions", {"Region"}, json::array(), "No cache regions."));
    return {{"sections", sections}};
}

// ---- HTML ---------------------------------------------------------------------------

std::string attr(std::string_view s) {
    return html_escape(s);
}

void render_actions(std::string& out, const json& actions, const std::string& csrf) {
    for (const auto& a : actions) {
        out += fmt::format("<form method=\"post\" action=\"{}\" class=\"inline\"",
                           attr(a["path"].get<std::string>()));
        if (!a["confirm"].get<std::string>().empty())
            out += fmt::format(" data-confirm=\"{}\"", attr(a["confirm"].get<std::string>()));
        out += fmt::format("><input type=\"hidden\" name=\"csrf\" value=\"{}\">", attr(csrf));
        for (const auto& [k, v] : a["fields"].items())
            out += fmt::format("<input type=\"hidden\" name=\"{}\" value=\"{}\">", attr(k), attr(display(v)));
        out += fmt::format("<button type=\"submit\"{}>{}</button></form>",
                           a["danger"].get<bool>() ? " class=\"danger\"" : "",
                           html_escape(a["label"].get<std::string>()));
    }
}

std::string fmt_value(const json& v, const std::string& format) {
    if (!v.is_number()) return "-";
    return format == "ratio" ? format_ratio(v.get<double>()) : dump(v);
}

void render_chart(std::string& out, const json& s) {
    const json& items = s["items"];
    const std::string format = s["format"].get<std::string>();
    std::size_t series = s["series"].size();
    double max = format == "ratio" ? 1.0 : 0.0;
    for (const auto& it : items)
        for (const auto& v : it["values"])
            if (v.is_number()) max = std::max(max, v.get<double>());
    if (max <= 0) max = 1;
    out += "<div class=\"legend\">";
    for (std::size_t i = 0; i < series; ++i)
        out += fmt::format("<span class=\"key s{}\"></span>{} ", i,
                           html_escape(s["series"][i].get<std::string>()));
    out += "</div>";
    if (items.empty()) {
        out += "<p class=\"empty\">No data.</p>";
        return;
    }
    if (s["orientation"] == "columns") {
        const double w = 720, h = 160, base = 140;
        double gw = w / static_cast<double>(items.size());
        double bw = gw * 0.8 / static_cast<double>(series);
        out += fmt::format("<svg class=\"chart\" viewBox=\"0 0 {} {}\" role=\"img\">", w, h);
        for (std::size_t i = 0; i < items.size(); ++i) {
            const json& it = items[i];
            for (std::size_t k = 0; k < series; ++k) {
                double v = it["values"][k].is_number() ? it["values"][k].get<double>() : 0;
                double bh = v / max * (base - 10);
                out += fmt::format(
                    "<rect class=\"s{}\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" "
                    "height=\"{:.1f}\"><title>{} {}: "
                    "{}</title></rect>",
                    k, gw * static_cast<double>(i) + gw * 0.1 + bw * static_cast<double>(k), base - bh, bw,
                    bh, html_escape(it["title"].get<std::string>()),
                    html_escape(s["series"][k].get<std::string>()), fmt_value(it["values"][k], format));
            }
            if (i % 3 == 0 || items.size() <= 12)
                out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" class=\"axis\">{}</text>",
                                   gw * static_cast<double>(i) + gw / 2, h - 4,
                                   html_escape(it["label"].get<std::string>()));
        }
        out += fmt::format("<text x=\"0\" y=\"10\" class=\"axis max\">{}</text></svg>",
                           fmt_value(json(max), format));
        return;
    }
    const double w = 720, row = 14.0 * static_cast<double>(series) + 8, label = 260, bar = w - label - 70;
    out += fmt::format("<svg class=\"chart\" viewBox=\"0 0 {} {:.0f}\" role=\"img\">", w,
                       row * static_cast<double>(items.size()));
    for (std::size_t i = 0; i < items.size(); ++i) {
        const json& it = items[i];
        double y = row * static_cast<double>(i);
        out += fmt::format("<text x=\"0\" y=\"{:.1f}\" class=\"label\">{}</text>", y + row / 2 + 3,
                           html_escape(truncate(it["label"].get<std::string>(), 40)));
        for (std::size_t k = 0; k < series; ++k) {
            double v = it["values"][k].is_number() ? it["values"][k].get<double>() : 0;
            double by = y + 4 + 14.0 * static_cast<double>(k);
            out += fmt::format(
                "<rect class=\"s{}\" x=\"{}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"12\"><title>{} {}: "
                "{}</title></rect><text x=\"{:.1f}\" y=\"{:.1f}\" class=\"value\">{}</text>",
                k, label, by, v / max * bar, html_escape(it["label"].get<std::string>()),
                html_escape(s["series"][k].get<std::string>()), fmt_value(it["values"][k], format),
                label + v / max * bar + 4, by + 10, fmt_value(it["values"][k], format));
        }
    }
    out += "</svg>";
}

void render_cell(std::string& out, const json& cell, const std::string& csrf) {
    out += "<td>";
    if (cell.is_object() && cell.contains("code")) {
        out += "<pre>" + html_escape(cell["code"].get<std::string>()) + "</pre>";
    } else if (cell.is_object() && cell.contains("actions")) {
        render_actions(out, cell["actions"], csrf);
    } else {
        out += html_escape(display(cell));
    }
    out += "</td>";
}

void render_section(std::string& out, const json& s, const std::string& csrf) {
    std::string type = s["type"].get<std::string>();
    out += fmt::format("<section class=\"sec-{}{}\">", type,
                       s.contains("format") ? " fmt-" + s["format"].get<std::string>() : std::string());
    if (!s["title"].get<std::string>().empty())
        out += "<h2>" + html_escape(s["title"].get<std::string>()) + "</h2>";
    if (type == "cards") {
        out += "<div class=\"cards\">";
        for (const auto& it : s["items"])
            out += fmt::format(
                "<div class=\"card\"><div class=\"value\">{}</div><div class=\"label\">{}</div></div>",
                html_escape(display(it["value"])), html_escape(display(it["label"])));
        out += "</div>";
    } else if (type == "chart") {
        render_chart(out, s);
    } else if (type == "actions") {
        render_actions(out, s["actions"], csrf);
    } else if (type == "table") {
        if (s["rows"].empty()) {
            out += "<p class=\"empty\">" + html_escape(s["empty"].get<std::string>()) + "</p>";
        } else {
            out += "<table><thead><tr>";
            for (const auto& c : s["columns"]) out += "<th>" + html_escape(c.get<std::string>()) + "</th>";
            out += "</tr></thead><tbody>";
            for (const auto& r : s["rows"]) {
                out += "<tr>";
                for (const auto& c : r) render_cell(out, c, csrf);
                out += "</tr>";
            }
            out += "</tbody></table>";
        }
    }
    out += "</section>";
}

const char* title_of(std::string_view page) {
    if (page == "overview") return "Overview";
    if (page == "queues") return "Queues";
    if (page == "workers") return "Workers";
    if (page == "failed") return "Failed";
    if (page == "scheduled") return "Scheduled";
    if (page == "periodic") return "Periodic";
    return "Cache";
}

std::string path_of(std::string_view page) {
    return page == "overview" ? "/" : "/" + std::string(page);
}

}  // namespace

const std::vector<std::string>& page_names() {
    static const std::vector<std::string> names = {"overview",  "queues",   "workers", "failed",
                                                   "scheduled", "periodic", "cache"};
    return names;
}

json page_data(const Views& views, std::string_view name) {
    if (name == "overview") {
        json d = views.info();
        d["history"] = views.history(24);
        return d;
    }
    if (name == "queues") return views.queues(10);
    if (name == "workers") return views.workers();
    if (name == "failed") return views.failed();
    if (name == "scheduled") return views.scheduled();
    if (name == "periodic") return views.periodic();
    if (name == "cache") return views.cache();
    throw std::out_of_range("no such page");
}

json page_model(std::string_view name, const json& data) {
    json m = name == "overview"    ? overview_model(data)
             : name == "queues"    ? queues_model(data)
             : name == "workers"   ? workers_model(data)
             : name == "failed"    ? failed_model(data)
             : name == "scheduled" ? scheduled_model(data)
             : name == "periodic"  ? periodic_model(data)
                                   : cache_model(data);
    m["page"] = name;
    m["title"] = title_of(name);
    m["updated"] = format_time(now_seconds()) + " UTC";
    return m;
}

namespace {

std::string head(std::string_view title, std::string_view extra) {
    return fmt::format(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>retools · {}</title>{}<link rel=\"stylesheet\" href=\"/assets/app.css\">"
        "<script src=\"/assets/app.js\" defer></script></head>",
        html_escape(title), extra);
}

}  // namespace

std::string render_page(const json& model, const std::string& server, const std::string& csrf,
                        int refresh_seconds) {
    std::string page = model["page"].get<std::string>();
    std::string out =
        head(model["title"].get<std::string>(),
             fmt::format("<meta name=\"csrf\" content=\"{}\"><meta name=\"refresh-seconds\" content=\"{}\">",
                         attr(csrf), refresh_seconds));
    out +=
        fmt::format("<body data-page=\"{}\"><header><span class=\"brand\">retools</span><nav>", attr(page));
    for (const std::string& p : page_names())
        out += fmt::format("<a href=\"{}\"{}>{}</a>", path_of(p), p == page ? " class=\"current\"" : "",
                           title_of(p));
    out += fmt::format("</nav><span class=\"server\">Redis {}</span></header><main id=\"main\">",
                       html_escape(server));
    out += "<h1>" + html_escape(model["title"].get<std::string>()) + "</h1>";
    for (const auto& s : model["sections"]) render_section(out, s, csrf);
    out += fmt::format(
        "</main><footer>Updated <span id=\"updated\">{}</span>, refreshing every {} s. "
        "<a href=\"/api/{}\">JSON</a> · <a href=\"/metrics\">metrics</a></footer></body></html>\n",
        html_escape(model["updated"].get<std::string>()), refresh_seconds, attr(page));
    return out;
}

std::string render_login(std::string_view message) {
    std::string out = head("Sign in", "");
    out +=
        "<body data-page=\"login\"><header><span class=\"brand\">retools</span></header><main><h1>Sign "
        "in</h1>";
    if (!message.empty()) out += "<p class=\"error\">" + html_escape(message) + "</p>";
    out +=
        "<form method=\"post\" action=\"/login\" class=\"login\"><label>Access token "
        "<input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>"
        "<button type=\"submit\">Sign in</button></form></main></body></html>\n";
    return out;
}

}  // namespace retools::tools
