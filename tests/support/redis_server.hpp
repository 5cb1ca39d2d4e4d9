#pragma once
// A private redis-server for tests: loopback only, no persistence, free port.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include <retools/connection.hpp>

namespace retools::test {

struct ServerOptions {
    /// 0 picks a free port at start-up.
    int port = 0;
    /// Extra `--name value` arguments, e.g. {"--requirepass", "s3cret"}.
    std::vector<std::string> args;
};

/// Starts on construction, stops (SIGTERM, then SIGKILL) on destruction. The
/// server dies with the test process even if that process crashes.
class RedisServer {
public:
    explicit RedisServer(ServerOptions options = {});
    ~RedisServer();
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    int port() const noexcept { return port_; }
    pid_t pid() const noexcept { return pid_; }
    bool running() const noexcept { return pid_ > 0; }
    /// `redis://127.0.0.1:<port>/0`
    std::string url() const;
    ConnectionOptions options() const;

    /// SIGKILL and reap: the server vanishes mid-conversation.
    void kill();
    /// Graceful stop.
    void stop();
    /// Starts again on the same port.
    void start();

private:
    void launch(int port);

    ServerOptions options_;
    int port_ = 0;
    pid_t pid_ = -1;
    std::string dir_;
};

/// A TCP port on 127.0.0.1 that nothing listens on right now.
int free_port();

/// Polls PING until the server at `port` answers or `within` elapses.
bool wait_until_ready(int port, std::chrono::milliseconds within);

}  // namespace retools::test
