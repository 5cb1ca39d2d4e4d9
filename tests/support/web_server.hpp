#pragma once
// `retools web` as a child process on a free loopback port, for the dashboard tests.
#include <httplib.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "process.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"

namespace retools::test {

class WebServer {
public:
    /// Starts `retools --url <suite's Redis> web --listen 127.0.0.1:<free port> extra...`
    /// and waits (up to 10 s) until it answers.
    explicit WebServer(std::vector<std::string> extra = {},
                       std::vector<std::pair<std::string, std::string>> env = {}) {
        port_ = free_port();
        log_ = fmt::format("{}/web-{}-{}.log", RETOOLS_BINARY_DIR, ::getpid(), port_);
        std::vector<std::string> argv = {RETOOLS_TOOL_PROGRAM, "--url",
                                         redis_url(),          "web",
                                         "--listen",           fmt::format("127.0.0.1:{}", port_)};
        argv.insert(argv.end(), extra.begin(), extra.end());
        child_.emplace(ChildProcess::spawn(argv, env, log_));
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            httplib::Client c = client();
            if (auto r = c.Get("/assets/app.css")) {
                ready_ = r->status == 200;
                break;
            }
            if (!child_->running()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    bool ready() const { return ready_; }
    int port() const { return port_; }
    std::string url(const std::string& path = "/") const {
        return fmt::format("http://127.0.0.1:{}{}", port_, path);
    }
    std::string log() const { return read_file(log_); }
    ChildProcess& process() { return *child_; }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port_);
        c.set_connection_timeout(2);
        c.set_read_timeout(10);
        return c;
    }

private:
    int port_ = 0;
    std::string log_;
    std::optional<ChildProcess> child_;
    bool ready_ = false;
};

}  // namespace retools::test
