#include "redis_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "process.hpp"

namespace retools::test {

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::runtime_error("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot find a free port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
}

bool wait_until_ready(int port, std::chrono::milliseconds within) {
    auto deadline = std::chrono::steady_clock::now() + within;
    Connection probe{ConnectionOptions{.port = port,
                                       .connect_timeout = std::chrono::milliseconds(200),
                                       .command_timeout = std::chrono::milliseconds(500),
                                       .pool_size = 1}};
    while (std::chrono::steady_clock::now() < deadline) {
        try {
            probe.command("PING");
            return true;
        } catch (const ReplyError&) {
            return true;  // answering NOAUTH still means it is up
        } catch (const Error&) {}
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

RedisServer::RedisServer(ServerOptions options) : options_(std::move(options)) {
    char tmpl[] = "/tmp/retools-redis-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    for (int attempt = 0;; ++attempt) {
        try {
            launch(options_.port ? options_.port : free_port());
            return;
        } catch (const std::exception&) {
            if (options_.port || attempt >= 5) throw;  // a random port may have been taken meanwhile
        }
    }
}

RedisServer::~RedisServer() {
    try {
        stop();
    } catch (...) {}
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string RedisServer::url() const {
    return fmt::format("redis://127.0.0.1:{}/0", port_);
}

ConnectionOptions RedisServer::options() const {
    return ConnectionOptions{.port = port_};
}

void RedisServer::launch(int port) {
    std::vector<std::string> args{"redis-server",
                                  "--port",
                                  std::to_string(port),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--daemonize",
                                  "no",
                                  "--dir",
                                  dir_,
                                  "--logfile",
                                  dir_ + "/redis.log",
                                  "--enable-debug-command",
                                  "local"};
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = fork_tied_to_parent();
    if (pid == 0) {
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::execvp("redis-server", argv.data());
        ::_exit(127);
    }
    pid_ = pid;
    port_ = port;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {  // could not bind, or not installed
            pid_ = -1;
            throw std::runtime_error(
                fmt::format("redis-server exited at start-up on port {} (see {}/redis.log; "
                            "is redis-server installed?)",
                            port, dir_));
        }
        if (wait_until_ready(port, std::chrono::milliseconds(100))) return;
    }
    kill();
    throw std::runtime_error(fmt::format("redis-server did not answer PING on port {}", port));
}

void RedisServer::kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void RedisServer::stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();
}

void RedisServer::start() {
    if (pid_ > 0) return;
    // The old socket may linger briefly in the kernel; retry the same port.
    for (int attempt = 0;; ++attempt) {
        try {
            launch(port_);
            return;
        } catch (const std::exception&) {
            if (attempt >= 20) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
}

}  // namespace retools::test
