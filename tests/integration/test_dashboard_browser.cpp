// The dashboard in a real browser: headless Chromium loads it, runs its
// JavaScript, and the DOM it rendered shows what this test put in Redis.
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>

#include "redis_test.hpp"
#include "run_program.hpp"
#include "web_server.hpp"

using namespace std::chrono_literals;
namespace rt = retools::test;

namespace {

constexpr const char* chromium = "/usr/bin/chromium";

class DashboardBrowser : public rt::RedisTest {
protected:
    void SetUp() override {
        if (::access(chromium, X_OK) != 0)
            GTEST_SKIP() << chromium << " is missing (Debian package chromium)";
        rt::RedisTest::SetUp();
        profile = std::filesystem::temp_directory_path() /
                  fmt::format("retools-chromium-{}-{}", ::getpid(), counter++);
        std::filesystem::create_directories(profile);
        for (int i = 0; i < 7; ++i)
            qm.enqueue("tests.browser:thumbnail", {{"n", i}}, {.queue_name = "images"});
        for (int i = 0; i < 3; ++i) qm.enqueue("tests.browser:mail", {{"n", i}}, {.queue_name = "mailers"});
        qm.enqueue("<script>alert(1)</script>", {}, {.queue_name = "evil"});
        conn.command("MSET", "retools:stat:processed", "1234", "retools:stat:failed", "56");
    }
    void TearDown() override {
        std::error_code ignored;
        if (!profile.empty()) std::filesystem::remove_all(profile, ignored);
    }

    rt::ProgramResult browse(const std::vector<std::string>& extra, const std::string& url) {
        std::vector<std::string> argv = {chromium,
                                         "--headless",
                                         "--no-sandbox",
                                         "--disable-gpu",
                                         "--disable-quic",
                                         "--no-first-run",
                                         "--disable-background-networking",
                                         "--disable-component-update",
                                         "--disable-sync",
                                         "--disable-dev-shm-usage",
                                         "--user-data-dir=" + profile.string(),
                                         "--virtual-time-budget=5000"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back(url);
        return rt::run_program(argv, {}, 100s);
    }

    retools::QueueManager qm{conn};
    std::filesystem::path profile;
    static inline int counter = 0;
};

}  // namespace

TEST_F(DashboardBrowser, RenderedDomShowsQueuesAndCounts) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    // The page's script re-rendered it from /api/page/overview (data-live),
    // so these counts came through the JavaScript renderer.
    auto r = browse({"--dump-dom"}, server.url("/"));
    ASSERT_EQ(r.code, 0) << r.err;
    const std::string& dom = r.out;
    EXPECT_NE(dom.find("data-live=\"1\""), std::string::npos) << dom;
    EXPECT_NE(dom.find("<td>images</td><td>7</td>"), std::string::npos) << dom;
    EXPECT_NE(dom.find("<td>mailers</td><td>3</td>"), std::string::npos) << dom;
    EXPECT_NE(dom.find("<div class=\"value\">1234</div>"), std::string::npos) << dom;
    EXPECT_NE(dom.find("<div class=\"value\">56</div>"), std::string::npos) << dom;
    EXPECT_NE(dom.find("<td>evil</td><td>1</td>"), std::string::npos) << dom;
    EXPECT_EQ(dom.find("<script>alert(1)</script>"), std::string::npos) << dom;

    // The queues page, after the script ran: the job name is text, not markup.
    auto q = browse({"--dump-dom"}, server.url("/queues"));
    ASSERT_EQ(q.code, 0) << q.err;
    EXPECT_NE(q.out.find("data-live=\"1\""), std::string::npos) << q.out;
    EXPECT_NE(q.out.find("Queue images: first 7 of 7"), std::string::npos) << q.out;
    EXPECT_NE(q.out.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos) << q.out;
    EXPECT_EQ(q.out.find("<script>alert(1)</script>"), std::string::npos) << q.out;
}

TEST_F(DashboardBrowser, ScreenshotIsAPng) {
    rt::WebServer server;
    ASSERT_TRUE(server.ready()) << server.log();
    std::string file = (profile / "overview.png").string();
    auto r = browse({"--window-size=1280,900", "--screenshot=" + file}, server.url("/"));
    ASSERT_EQ(r.code, 0) << r.err;
    std::string png = rt::read_file(file);
    ASSERT_GT(png.size(), 1000u) << r.err;
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}
