// Reading queues without taking from them, for tools.
#include <retools/queue.hpp>

#include "queue/queue_manager_impl.hpp"

namespace retools {

std::vector<std::string> QueueManager::peek_payloads(std::string_view queue_name, std::size_t count) const {
    std::vector<std::string> out;
    if (count == 0) return out;
    std::string key = impl_->topology_.queue_key(queue_name.empty() ? default_queue_name() : queue_name);
    for (const Reply& r :
         impl_->conn_.command("LRANGE", key, 0, static_cast<long long>(count) - 1).as_array())
        out.push_back(r.as_string());
    return out;
}

}  // namespace retools
