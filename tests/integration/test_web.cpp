// `retools web`: pages, the JSON API and /metrics checked against Redis;
// escaping of attacker-controlled text; CSRF, token and Host checks.
#include <unistd.h>

#include <chrono>
#include <regex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/queue.hpp>

#include "queue/test_hooks.hpp"
#include "redis_test.hpp"
#include "run_program.hpp"
#include "web_server.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace rt = retools::test;

namespace {

const std::string evil = "<script>alert(1)</script>";

class Web : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        double now = rt::unix_now();
        qm.enqueue("tests.web:send", {{"to", "a@example.com"}}, {.metadata = {{"enqueued_at", now - 12}}});
        qm.enqueue("tests.web:send", {{"to", "b@example.com"}});
        // Pushed as Python retools does: no enqueued_at, so the latency is unknown.
        conn.command("RPUSH", "retools:queue:high",
                     retools::detail::make_payload(qm, "0123456789abcdef0123456789abcde1", evil,
                                                   {{"x", "<img src=x onerror=alert(2)>"}}));
        conn.command("SADD", "retools:queues", "high");
        failed_payload = retools::detail::make_payload(qm, "0123456789abcdef0123456789abcdef",
                                                       "tests.web:resize", {{"image", "a.png"}});
        qm.record_failure(
            {failed_payload, "images", "ValueError: <b>bad</b> image", "host:1:images", now - 60});
        scheduled_id = qm.enqueue_in(1h, "tests.web:later", {{"n", 5}});
        qm.schedule_periodic("nightly", "0 3 * * *", "tests.web:report", {{"kind", "daily"}});
        conn.command("MSET", "retools:stat:processed", "42", "retools:stat:failed", "3");
        conn.command("SADD", "retools:workers", "pyhost:77:main");
        retools::CacheRegion::add_region("short_term", 60s);
        auto search =
            retools::cache_region("short_term", "tests.search", [](const std::string& s) { return s + "!"; });
        search("bunny");
        search("bunny");
        search("bunny");
    }

    json get_json(rt::WebServer& server, const std::string& path) {
        auto r = server.client().Get(path.c_str());
        EXPECT_TRUE(r) << path;
        if (!r) return nullptr;
        EXPECT_EQ(r->status, 200) << path << "\n" << r->body;
        EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
        return json::parse(r->body);
    }

    static std::string csrf_of(const std::string& html) {
        std::smatch m;
        std::regex re(R"re(<meta name="csrf" content="([0-9a-f]+)">)re");
        return std::regex_search(html, m, re) ? m[1].str() : std::string();
    }

    std::string csrf(rt::WebServer& server, const httplib::Headers& headers = {}) {
        auto r = server.client().Get("/failed", headers);
        EXPECT_TRUE(r && r->status == 200);
        return r ? csrf_of(r->body) : std::string();
    }

    retools::QueueManager qm{conn};
    std::string failed_payload, scheduled_id;
};

}  // namespace

TEST_F(Web, EveryPageShowsWhatIsInRedis) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    auto c = server.client();
    struct Expect {
        const char* path;
        std::vector<std::string> texts;
    };
    std::vector<Expect> pages = {
        {"/",
         {"<h1>Overview</h1>", "<div class=\"value\">42</div><div class=\"label\">Processed</div>",
          "<div class=\"value\">3</div><div class=\"label\">Failed</div>",
          "<div class=\"value\">1</div><div class=\"label\">In the failed list</div>",
          "<div class=\"value\">1</div><div class=\"label\">Scheduled</div>",
          "<td>main</td><td>2</td><td>12s</td>", "<td>high</td><td>1</td><td>-</td>", "Last 24 hours"}},
        {"/queues",
         {"<td>main</td><td>2</td>", "Queue main: first 2 of 2", "tests.web:send", "a@example.com",
          "b@example.com"}},
        {"/workers",
         {"<td>pyhost:77:main</td><td>registered</td><td>-</td><td>main</td><td>0</td><td>-</td>"}},
        {"/failed",
         {"Failed jobs (1)", "<td>images</td><td>tests.web:resize</td>", "0123456789abcdef0123456789abcdef",
          "a.png", "Retry all", "action=\"/failed/retry\""}},
        {"/scheduled",
         {"Scheduled jobs (1)", scheduled_id, "tests.web:later", "action=\"/scheduled/cancel\""}},
        {"/periodic",
         {"Periodic jobs (1)", "<td>nightly</td><td>0 3 * * *</td><td>tests.web:report</td><td>main</td>"}},
        {"/cache",
         {"Hit ratio by namespace", "Region short_term: 2 hits, 1 misses today (66.7%)",
          "<td>tests.search</td><td>1</td><td>2</td><td>1</td><td>66.7%</td>"}},
    };
    for (const auto& p : pages) {
        auto r = c.Get(p.path);
        ASSERT_TRUE(r) << p.path;
        EXPECT_EQ(r->status, 200) << p.path;
        EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
        EXPECT_NE(r->get_header_value("Content-Security-Policy").find("script-src 'self'"),
                  std::string::npos);
        EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY");
        for (const auto& t : p.texts) EXPECT_NE(r->body.find(t), std::string::npos) << p.path << ": " << t;
        EXPECT_NE(r->body.find(fmt::format("Redis {}", conn.options().describe())), std::string::npos);
    }
    for (const char* asset : {"/assets/app.js", "/assets/app.css"}) {
        auto r = c.Get(asset);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
        EXPECT_GT(r->body.size(), 1000u);
    }
    auto js = c.Get("/assets/app.js");
    for (const char* sink : {".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("})
        EXPECT_EQ(js->body.find(sink), std::string::npos) << sink;  // DOM built with textContent only
    EXPECT_EQ(c.Get("/nope")->status, 404);
}

TEST_F(Web, ApiMirrorsMatchRedis) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    json o = get_json(server, "/api/overview");
    EXPECT_EQ(o["counters"]["processed"], 42);
    EXPECT_EQ(o["counters"]["failed"], 3);
    EXPECT_EQ(o["failed_count"], qm.failed_count());
    EXPECT_EQ(o["scheduled_count"], 1);
    EXPECT_EQ(o["history"].size(), 24u);
    EXPECT_EQ(o["server"], conn.options().describe());

    json q = get_json(server, "/api/queues");
    ASSERT_EQ(q.size(), 2u);
    for (const auto& queue : q) {
        EXPECT_EQ(queue["length"], qm.queue_length(queue["name"].get<std::string>()));
        auto jobs = qm.get_jobs(queue["name"].get<std::string>());
        ASSERT_EQ(queue["jobs"].size(), jobs.size());
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            EXPECT_EQ(queue["jobs"][i]["job_id"], jobs[i].id());
            EXPECT_EQ(queue["jobs"][i]["kwargs"], jobs[i].kwargs());
        }
    }
    EXPECT_NEAR(q[1]["latency"].get<double>(), 12, 10);

    json f = get_json(server, "/api/failed");
    auto failed = qm.failed_jobs();
    ASSERT_EQ(f.size(), failed.size());
    EXPECT_EQ(f[0]["payload"], failed[0].payload);
    EXPECT_EQ(f[0]["error"], failed[0].error);
    EXPECT_EQ(f[0]["queue"], "images");

    json pj = get_json(server, "/api/periodic");
    ASSERT_EQ(pj.size(), 1u);
    EXPECT_EQ(pj[0]["id"], "nightly");
    EXPECT_EQ(pj[0]["schedule"], "0 3 * * *");
    EXPECT_EQ(static_cast<long long>(pj[0]["next_run"].get<double>()) % 86400, 3 * 3600);
    json s = get_json(server, "/api/scheduled");
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s[0]["job_id"], scheduled_id);

    json w = get_json(server, "/api/workers");
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0]["id"], "pyhost:77:main");

    json cache = get_json(server, "/api/cache");
    auto stats = retools::cache_stats("short_term", "tests.search", "bunny");
    ASSERT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache[0]["region"], "short_term");
    EXPECT_EQ(cache[0]["namespaces"][0]["today"]["hits"], stats.hits);
    EXPECT_EQ(cache[0]["namespaces"][0]["today"]["misses"], stats.misses);
    EXPECT_EQ(cache[0]["namespaces"][0]["week"]["hits"], stats.hits);

    json model = get_json(server, "/api/page/failed");
    EXPECT_EQ(model["page"], "failed");
    EXPECT_FALSE(model["sections"].empty());
}

TEST_F(Web, AttackerControlledTextIsEscaped) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    qm.record_failure({retools::detail::make_payload(qm, "ab", evil, {{"y", "\"><svg onload=alert(3)>"}}),
                       "main", evil, "w", 0});
    for (const char* path : {"/", "/queues", "/failed"}) {
        auto r = server.client().Get(path);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->body.find("<script>alert"), std::string::npos) << path;
        EXPECT_EQ(r->body.find("<img src=x"), std::string::npos) << path;
        EXPECT_EQ(r->body.find("<svg onload"), std::string::npos) << path;
        EXPECT_EQ(r->body.find("<b>bad</b>"), std::string::npos) << path;
    }
    auto queues = server.client().Get("/queues");
    EXPECT_NE(queues->body.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
    EXPECT_NE(queues->body.find("&lt;img src=x onerror=alert(2)&gt;"), std::string::npos);
    auto failed = server.client().Get("/failed");
    EXPECT_NE(failed->body.find("ValueError: &lt;b&gt;bad&lt;/b&gt; image"), std::string::npos);
    EXPECT_NE(failed->body.find("&quot;&gt;&lt;svg onload=alert(3)&gt;"), std::string::npos);
}

TEST_F(Web, PostWithoutCsrfTokenIsRefusedAndChangesNothing) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    std::string entry = qm.failed_jobs().at(0).entry;
    auto c = server.client();
    httplib::Params no_csrf = {{"entry", entry}};
    httplib::Params wrong = {{"entry", entry}, {"csrf", "0123"}};
    for (const auto& params : {no_csrf, wrong}) {
        auto r = c.Post("/failed/retry", params);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 403);
        for (const char* path : {"/failed/clear", "/failed/retry-all", "/failed/remove"})
            EXPECT_EQ(c.Post(path, params)->status, 403) << path;
    }
    EXPECT_EQ(c.Post("/scheduled/cancel", httplib::Params{{"job_id", scheduled_id}})->status, 403);
    EXPECT_EQ(c.Get("/failed/retry")->status, 404);  // never by GET
    std::string token = csrf(server);
    ASSERT_EQ(token.size(), 64u);
    // The right token from another origin: refused.
    auto cross = c.Post("/failed/retry", {{"Origin", "http://evil.example"}},
                        httplib::Params{{"entry", entry}, {"csrf", token}});
    EXPECT_EQ(cross->status, 403);
    EXPECT_EQ(qm.failed_count(), 1u);
    EXPECT_EQ(qm.queue_length("images"), 0u);
    EXPECT_EQ(qm.scheduled_jobs().size(), 1u);

    auto ok = c.Post("/failed/retry", {{"Origin", fmt::format("http://127.0.0.1:{}", server.port())}},
                     httplib::Params{{"entry", entry}, {"csrf", token}});
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 303);
    EXPECT_EQ(ok->get_header_value("Location"), "/failed");
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_EQ(qm.peek_payloads("images", 5), std::vector<std::string>{failed_payload});
    EXPECT_EQ(c.Post("/failed/retry", httplib::Params{{"entry", entry}, {"csrf", token}})->status,
              404);  // gone

    EXPECT_EQ(c.Post("/scheduled/cancel", httplib::Params{{"job_id", scheduled_id}, {"csrf", token}})->status,
              303);
    EXPECT_TRUE(qm.scheduled_jobs().empty());
    qm.record_failure({"x", "main", "e", "w", 0});
    qm.record_failure({"y", "main", "e", "w", 0});
    EXPECT_EQ(c.Post("/failed/remove", httplib::Params{{"entry", qm.failed_jobs()[0].entry}, {"csrf", token}})
                  ->status,
              303);
    EXPECT_EQ(qm.failed_jobs().at(0).payload, "y");
    EXPECT_EQ(c.Post("/failed/clear", httplib::Params{{"csrf", token}})->status, 303);
    EXPECT_EQ(qm.failed_count(), 0u);
}

TEST_F(Web, AuthTokenIsRequiredOnEveryRequest) {
    const std::string secret = "tok-3f9a1c";
    rt::WebServer server({"--auth-token", secret});
    ASSERT_TRUE(server.ready()) << server.log();
    auto c = server.client();
    for (const char* path : {"/", "/queues", "/api/overview", "/api/page/failed", "/metrics"}) {
        auto r = c.Get(path);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 403) << path;
        EXPECT_EQ(r->body.find("42"), std::string::npos) << path;
    }
    EXPECT_NE(c.Get("/")->body.find("action=\"/login\""), std::string::npos);  // the login form
    EXPECT_EQ(c.Get("/", {{"Authorization", "Bearer wrong"}})->status, 403);
    httplib::Headers bearer = {{"Authorization", "Bearer " + secret}};
    auto page = c.Get("/failed", bearer);
    ASSERT_EQ(page->status, 200);
    EXPECT_EQ(page->body.find(secret), std::string::npos);  // never echoed
    EXPECT_EQ(c.Get("/metrics", bearer)->status, 200);

    // ?token= sets a cookie and redirects; the cookie then suffices.
    auto login = c.Get(("/queues?token=" + secret).c_str());
    ASSERT_EQ(login->status, 303);
    std::string cookie = login->get_header_value("Set-Cookie");
    EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
    EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
    httplib::Headers with_cookie = {{"Cookie", cookie.substr(0, cookie.find(';'))}};
    EXPECT_EQ(c.Get("/queues", with_cookie)->status, 200);
    EXPECT_EQ(c.Post("/login", httplib::Params{{"token", "bad"}})->status, 403);
    EXPECT_EQ(c.Post("/login", httplib::Params{{"token", secret}})->status, 303);

    // A POST with the CSRF token but without the access token: refused.
    std::string token = csrf_of(page->body);
    std::string entry = qm.failed_jobs().at(0).entry;
    httplib::Params form = {{"entry", entry}, {"csrf", token}};
    EXPECT_EQ(c.Post("/failed/retry", form)->status, 403);
    EXPECT_EQ(c.Post("/failed/retry", {{"Authorization", "Bearer nope"}}, form)->status, 403);
    EXPECT_EQ(qm.failed_count(), 1u);
    // Access token without the CSRF token: refused too.
    EXPECT_EQ(c.Post("/failed/retry", bearer, httplib::Params{{"entry", entry}})->status, 403);
    EXPECT_EQ(qm.failed_count(), 1u);
    // Both: done.
    EXPECT_EQ(c.Post("/failed/retry", bearer, form)->status, 303);
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_EQ(qm.peek_payloads("images", 5), std::vector<std::string>{failed_payload});
}

TEST_F(Web, TokenFromTheEnvironment) {
    rt::WebServer server({}, {{"RETOOLS_WEB_TOKEN", "from-env"}});
    ASSERT_TRUE(server.ready()) << server.log();
    EXPECT_EQ(server.client().Get("/")->status, 403);
    EXPECT_EQ(server.client().Get("/", {{"Authorization", "Bearer from-env"}})->status, 200);
}

TEST_F(Web, ForeignHostHeaderIsRefusedWithoutAToken) {
    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    auto r = server.client().Get("/api/failed", {{"Host", "evil.example:9181"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(server.client().Get("/", {{"Host", fmt::format("localhost:{}", server.port())}})->status, 200);
}

TEST_F(Web, MetricsAreValidExpositionAndMatchRedis) {
    qm.enqueue("tests.web:odd", {}, {.queue_name = "we\"ird\\q"});
    auto odd_ns = retools::cache_region("short_term", "line\nbreak", [](int n) { return n; });
    odd_ns(1);
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    auto r = server.client().Get("/metrics");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    const std::string& text = r->body;
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');

    // Every line: HELP, TYPE, or a sample of a family declared just before.
    std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
    std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
    std::regex sample(
        R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")*\})? (-?[0-9.e+]+|NaN|[+-]Inf))");
    std::string family;
    std::map<std::string, double> values;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        std::string line = text.substr(start, end - start);
        start = end + 1;
        std::smatch m;
        if (std::regex_match(line, m, help)) {
            family = m[1];
        } else if (std::regex_match(line, m, type)) {
            EXPECT_EQ(m[1], family) << line;
        } else if (std::regex_match(line, m, sample)) {
            EXPECT_EQ(m[1], family) << line;
            values[line.substr(0, line.rfind(' '))] = std::stod(line.substr(line.rfind(' ') + 1));
        } else {
            ADD_FAILURE() << "not an exposition line: " << line;
        }
    }
    EXPECT_EQ(values["retools_queue_length{queue=\"main\"}"], 2);
    EXPECT_EQ(values["retools_queue_length{queue=\"high\"}"], 1);
    EXPECT_EQ(values["retools_queue_length{queue=\"we\\\"ird\\\\q\"}"], 1);
    EXPECT_NEAR(values["retools_queue_latency_seconds{queue=\"main\"}"], 12, 10);
    EXPECT_EQ(values.count("retools_queue_latency_seconds{queue=\"high\"}"), 0u);  // unknown enqueue time
    EXPECT_EQ(values["retools_workers"], 1);
    EXPECT_EQ(values["retools_workers_busy"], 0);
    EXPECT_EQ(values["retools_jobs_processed_total"], 42);
    EXPECT_EQ(values["retools_jobs_failed_total"], 3);
    EXPECT_EQ(values["retools_failed_jobs"], 1);
    EXPECT_EQ(values["retools_scheduled_jobs"], 1);
    EXPECT_EQ(values["retools_cache_hits{region=\"short_term\",namespace=\"tests.search\"}"], 2);
    EXPECT_EQ(values["retools_cache_misses{region=\"short_term\",namespace=\"tests.search\"}"], 1);
    EXPECT_EQ(values["retools_cache_misses{region=\"short_term\",namespace=\"line\\nbreak\"}"], 1);
    for (const char* name :
         {"retools_queue_length", "retools_queue_latency_seconds", "retools_workers", "retools_workers_busy",
          "retools_jobs_processed_total", "retools_jobs_failed_total", "retools_failed_jobs",
          "retools_scheduled_jobs", "retools_cache_hits", "retools_cache_misses"})
        EXPECT_NE(text.find(fmt::format("# TYPE {} ", name)), std::string::npos) << name;

    if (::access("/usr/bin/promtool", X_OK) == 0) {
        std::string file = fmt::format("{}/metrics-{}.txt", RETOOLS_BINARY_DIR, ::getpid());
        {
            std::FILE* f = std::fopen(file.c_str(), "w");
            std::fwrite(text.data(), 1, text.size(), f);
            std::fclose(f);
        }
        auto check = rt::run_program({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file});
        EXPECT_EQ(check.code, 0) << check.out << check.err;
    }
}

TEST_F(Web, TheFailedPageShowsTheOldest200) {
    retools::Pipeline p;
    for (int i = 0; i < 205; ++i)
        p.command("RPUSH", "retools:failed",
                  retools::FailedJob{fmt::format("payload-{}", i), "main", "e", "w", 1.0}.to_json());
    conn.execute(p);
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    auto r = server.client().Get("/failed");
    ASSERT_TRUE(r);
    EXPECT_NE(r->body.find("Failed jobs (206, the oldest 200 shown)"), std::string::npos);
    EXPECT_NE(r->body.find("payload-198"), std::string::npos);
    EXPECT_EQ(r->body.find("payload-199"), std::string::npos);
    EXPECT_EQ(get_json(server, "/api/failed").size(), 206u);
}

TEST_F(Web, RefusesAPortInUse) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    auto second = rt::run_program({RETOOLS_TOOL_PROGRAM, "--url", rt::redis_url(), "web", "--listen",
                                   fmt::format("127.0.0.1:{}", server.port())},
                                  {}, 10s);
    EXPECT_EQ(second.code, 1);
    EXPECT_NE(second.err.find(fmt::format("cannot listen on 127.0.0.1:{}", server.port())), std::string::npos)
        << second.err;
}

TEST_F(Web, StopsOnSigterm) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    server.process().signal(SIGTERM);
    EXPECT_EQ(server.process().exit_code(5s), 0) << server.log();
}
