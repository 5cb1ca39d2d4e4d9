#pragma once
// A TCP proxy on loopback that delays every chunk of bytes by a fixed time in
// each direction, for tests and benchmarks of a network slower than
// loopback. One thread, poll(); every connection accepted is forwarded to
// 127.0.0.1:<target>. It can also hold back the server's replies, so a test
// can be sure requests are in flight when it cuts a socket. When either side
// hangs up, the other is closed and bytes still pending are dropped.

#include <atomic>
#include <chrono>
#include <thread>

namespace retools::test {

class LatencyProxy {
public:
    /// Listens on a free loopback port; `one_way` is added to each direction
    /// (a round trip costs twice that more).
    LatencyProxy(int target_port, std::chrono::microseconds one_way);
    ~LatencyProxy();
    LatencyProxy(const LatencyProxy&) = delete;
    LatencyProxy& operator=(const LatencyProxy&) = delete;

    int port() const noexcept { return port_; }
    /// While held, bytes from the server are kept (not forwarded) until released.
    void hold_replies(bool held) noexcept { held_.store(held); }

private:
    void loop();

    int target_port_;
    std::chrono::microseconds delay_;
    int listen_fd_ = -1;
    int port_ = 0;
    int wake_[2] = {-1, -1};  // a pipe that stops the loop
    std::atomic<bool> held_{false};
    std::thread thread_;
};

}  // namespace retools::test
