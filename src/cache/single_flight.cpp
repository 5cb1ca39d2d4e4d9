#include "cache/single_flight.hpp"

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>

namespace retools::detail {
namespace {

struct Flight {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    bool storable = false;
    std::string bytes;
    std::exception_ptr error;
};

struct Flights {
    std::mutex mutex;
    std::map<std::string, std::shared_ptr<Flight>, std::less<>> running;
};

Flights& flights() {
    static Flights* all = new Flights;  // never destroyed: callers may run during exit
    return *all;
}

// The leader's computation, published to the followers whatever its outcome.
bool lead(const std::string& key, Flight& flight, LoadTarget& target, std::string& bytes, std::string& why) {
    bool storable = false;
    std::exception_ptr error;
    try {
        storable = target.produce(bytes, why);
    } catch (...) {
        error = std::current_exception();
    }
    {
        std::lock_guard lock(flights().mutex);
        flights().running.erase(key);
    }
    {
        std::lock_guard lock(flight.mutex);
        flight.done = true;
        flight.storable = storable;
        if (storable) flight.bytes = bytes;
        flight.error = error;
    }
    flight.done_cv.notify_all();
    if (error) std::rethrow_exception(error);
    return storable;
}

}  // namespace

bool produce_once(const std::string& key, LoadTarget& target, std::string& bytes, std::string& why) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
        std::lock_guard lock(flights().mutex);
        auto [it, inserted] = flights().running.try_emplace(key);
        if (inserted) it->second = std::make_shared<Flight>();
        flight = it->second;
        leader = inserted;
    }
    if (leader) return lead(key, *flight, target, bytes, why);
    std::unique_lock lock(flight->mutex);
    flight->done_cv.wait(lock, [&] { return flight->done; });
    if (flight->error) std::rethrow_exception(flight->error);
    // A value that could not be encoded cannot be shared: compute it here.
    if (flight->storable && target.accept(flight->bytes)) {
        bytes = flight->bytes;
        return true;
    }
    lock.unlock();
    return target.produce(bytes, why);
}

}  // namespace retools::detail
