#pragma once
// HealthGate: HealthFsm made thread-safe, one per pool and process. Calls
// ask it before leasing a link (Connection::Impl::Lease); links report
// timeouts and answers to it. While the server is healthy asking costs one
// atomic load.

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <string_view>

#include "client/health_fsm.hpp"

namespace retools::detail {

class HealthGate {
public:
    /// `server` names the server in fail-fast messages; see HealthFsm for the others.
    HealthGate(std::string server, std::chrono::milliseconds backoff_max,
               std::chrono::milliseconds probe_limit)
        : server_(std::move(server)), fsm_(backoff_max, probe_limit) {}

    /// Lets a call through (true: it is the probe), or throws ConnectionError
    /// (nothing sent) naming the server and the failure that took it down.
    bool admit();
    /// The server answered. Cheap unless the server was down.
    void succeeded() {
        if (down_.load(std::memory_order_acquire)) succeeded_slow();
    }
    /// A refused dial or a timed-out round trip; `probe`: the probe's.
    void failed(std::string_view what, bool probe);
    /// The probe ended without telling whether the server is up.
    void abandon_probe();
    /// Forget any failure (the server was replaced).
    void reset();
    bool down() const noexcept { return down_.load(std::memory_order_acquire); }

private:
    void succeeded_slow();

    const std::string server_;
    std::mutex mutex_;
    HealthFsm fsm_;
    std::atomic<bool> down_{false};
};

}  // namespace retools::detail
