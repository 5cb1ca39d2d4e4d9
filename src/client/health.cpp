#include "client/health.hpp"

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/errors.hpp"

namespace retools::detail {

bool HealthGate::admit() {
    if (!down()) return false;
    std::unique_lock lock(mutex_);
    const HealthFsm::Admission a = fsm_.admit(HealthFsm::Clock::now());
    if (a.kind == HealthFsm::Admission::Kind::send) return false;
    if (a.kind == HealthFsm::Admission::Kind::probe) return true;
    const std::string when = a.retry_in.count() > 0 ? fmt::format("for {} ms more", a.retry_in.count())
                                                    : std::string("while a probe is under way");
    std::string message = fmt::format("Redis {} is down: failing fast {} (nothing was sent); the failure: {}",
                                      server_, when, fsm_.failure());
    lock.unlock();
    throw_not_sent(message);
}

void HealthGate::failed(std::string_view what, bool probe) {
    std::lock_guard lock(mutex_);
    fsm_.on_failure(HealthFsm::Clock::now(), std::string(what), probe);
    down_.store(fsm_.down(), std::memory_order_release);
}

void HealthGate::abandon_probe() {
    std::lock_guard lock(mutex_);
    fsm_.on_probe_abandoned();
}

void HealthGate::reset() {
    std::lock_guard lock(mutex_);
    fsm_.reset();
    down_.store(false, std::memory_order_release);
}

void HealthGate::succeeded_slow() {
    std::lock_guard lock(mutex_);
    fsm_.on_success();
    down_.store(false, std::memory_order_release);
}

}  // namespace retools::detail
