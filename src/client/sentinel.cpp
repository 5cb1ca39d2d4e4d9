#include "client/sentinel.hpp"

#include <algorithm>
#include <charconv>
#include <span>
#include <sstream>

#include <fmt/format.h>

#include <retools/detail/command_buffer.hpp>
#include <retools/errors.hpp>

#include "client/link.hpp"
#include "client/tls.hpp"
#include "client/transport.hpp"

namespace retools::detail {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The events the watcher follows, as the sentinels publish them.
constexpr const char* kSwitchMaster = "+switch-master";
constexpr const char* kPromoting = "+failover-state-send-slaveof-noone";
constexpr const char* kAborts[] = {"-failover-abort-not-elected", "-failover-abort-no-good-slave",
                                   "-failover-abort-slave-timeout", "+failover-end-for-timeout"};
constexpr std::size_t kChannels = 2 + std::size(kAborts);

// How long a failed discovery is trusted before another caller asks again.
constexpr auto kRetryPause = 100ms;
// How often a lost subscription is opened again.
constexpr auto kResubscribe = 1000ms;
// How often a watcher looks up from its socket to see whether it must stop.
constexpr auto kWatchTick = 200ms;

std::string text(const Endpoint& e) {
    if (e.host.find(':') != std::string::npos) return fmt::format("[{}]:{}", e.host, e.port);
    return fmt::format("{}:{}", e.host, e.port);
}

template <class... Args>
std::string resp(const Args&... args) {
    CommandBuffer buffer;
    buffer.add(args...);
    return buffer.data();
}

std::optional<int> parse_port(std::string_view s) {
    int port = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), port);
    if (ec != std::errc{} || end != s.data() + s.size() || port <= 0 || port > 65535) return std::nullopt;
    return port;
}

std::vector<std::string> words(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

}  // namespace

bool failover_reply(const Reply& reply) {
    if (!reply.is_error()) return false;
    std::string_view m = reply.error_message();
    return m.starts_with("READONLY") || m.starts_with("LOADING") || m.starts_with("MASTERDOWN");
}

void validate_sentinel(const ConnectionOptions& options) {
    const SentinelOptions& s = *options.sentinel;
    if (s.master.empty())
        throw ConfigurationError("SentinelOptions.master is empty (the name the sentinels monitor)");
    if (s.sentinels.empty()) throw ConfigurationError("SentinelOptions.sentinels is empty");
    for (const Endpoint& e : s.sentinels) {
        if (e.host.empty()) throw ConfigurationError("SentinelOptions.sentinels has an empty host");
        if (e.port <= 0 || e.port > 65535)
            throw ConfigurationError(fmt::format(
                "SentinelOptions.sentinels: port {} of {:?} is not from 1 to 65535", e.port, e.host));
    }
    if (!options.path.empty())
        throw ConfigurationError("ConnectionOptions.sentinel and ConnectionOptions.path cannot both be set");
}

std::string describe_sentinel(const ConnectionOptions& options) {
    std::string list;
    for (const Endpoint& e : options.sentinel->sentinels) {
        if (!list.empty()) list += ',';
        list += text(e);
    }
    return fmt::format("master {:?} via sentinels {}/{}", options.sentinel->master, list, options.db);
}

struct SentinelMonitor::Found {
    std::optional<Endpoint> address;
    bool any_sentinel = false;  // at least one sentinel answered
    bool unknown = false;       // every sentinel that answered does not know the master
    std::string problem;
};

SentinelMonitor::SentinelMonitor(const ConnectionOptions& options, const TlsContext* data_tls)
    : options_(options), sentinel_(*options_.sentinel), data_tls_(data_tls) {
    if (sentinel_.tls) sentinel_tls_ = std::make_unique<const TlsContext>(*sentinel_.tls);
}

SentinelMonitor::~SentinelMonitor() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    changed_.notify_all();
    for (auto& t : watchers_) t.join();
}

ConnectionOptions SentinelMonitor::sentinel_options(const Endpoint& sentinel) const {
    ConnectionOptions o;
    o.host = sentinel.host;
    o.port = sentinel.port;
    o.user = sentinel_.username;
    o.password = sentinel_.password;
    o.connect_timeout = options_.connect_timeout;
    o.command_timeout =
        options_.connect_timeout.count() > 0 ? options_.connect_timeout : options_.command_timeout;
    o.pool_size = 1;
    o.tls = sentinel_.tls;
    return o;
}

std::string SentinelMonitor::check_role(const Endpoint& node) const {
    ConnectionOptions o = options_;
    o.sentinel.reset();
    o.path.clear();
    o.host = node.host;
    o.port = node.port;
    o.db = 0;
    auto link = Link::open(o, data_tls_);
    Reply role = link->call(resp("ROLE"), o.command_timeout);
    role.check();
    return role[0].as_string();
}

SentinelMonitor::Found SentinelMonitor::discover() {
    Found found;
    std::vector<std::string> unreachable;
    std::string last_error;
    std::string node_problem;
    std::size_t answered = 0, unknown = 0;
    for (const Endpoint& s : sentinel_.sentinels) {
        Reply r;
        try {
            auto link = Link::open(sentinel_options(s), sentinel_tls_.get());
            r = link->call(resp("SENTINEL", "get-master-addr-by-name", sentinel_.master),
                           sentinel_options(s).command_timeout);
        } catch (const Error& e) {
            unreachable.push_back(text(s));
            last_error = e.what();
            continue;
        }
        found.any_sentinel = true;
        ++answered;
        if (r.is_error()) {
            node_problem = fmt::format("sentinel {} refused SENTINEL get-master-addr-by-name: {}", text(s),
                                       r.error_message());
            continue;
        }
        std::optional<int> port;
        if (r.is_array() && r.size() == 2 && r[0].is_string() && r[1].is_string())
            port = parse_port(r[1].view());
        if (!port) {
            ++unknown;
            node_problem =
                fmt::format("sentinel {} does not monitor a master named {:?}", text(s), sentinel_.master);
            continue;
        }
        Endpoint node{r[0].as_string(), *port};
        try {
            std::string role = check_role(node);
            if (role == "master") {
                found.address = node;
                return found;
            }
            node_problem = fmt::format("sentinel {} names {} as master {:?}, but it answers ROLE with {:?}",
                                       text(s), text(node), sentinel_.master, role);
        } catch (const Error& e) {
            node_problem = fmt::format("sentinel {} names {} as master {:?}, but: {}", text(s), text(node),
                                       sentinel_.master, e.what());
        }
    }
    found.unknown = answered > 0 && unknown == answered;
    std::string tried;
    for (const auto& u : unreachable) tried += (tried.empty() ? "" : ", ") + u;
    if (!found.any_sentinel)
        found.problem =
            fmt::format("no sentinel of {:?} answered ({}; last error: {})", sentinel_.master,
                        tried.empty() ? std::string("no sentinels configured") : tried, last_error);
    else
        found.problem = unreachable.empty()
                            ? node_problem
                            : fmt::format("{} (sentinels not answering: {})", node_problem, tried);
    return found;
}

void SentinelMonitor::set_master_locked(const Endpoint& address) {
    if (!known_ || *known_ != address) {
        if (known_) switches_.fetch_add(1, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    known_ = address;
    stale_ = false;
    fenced_ = false;
    changed_.notify_all();
}

SentinelMonitor::Master SentinelMonitor::master(std::chrono::milliseconds wait) {
    const auto deadline = Clock::now() + wait;
    std::unique_lock lock(mutex_);
    start_watcher_locked();
    std::string problem;
    for (;;) {
        auto now = Clock::now();
        if (fenced_ && now >= fence_ends_) {  // no switch announced in time: ask again
            fenced_ = false;
            stale_ = true;
        }
        if (fenced_) {
            if (now >= deadline)
                throw ConnectionError(fmt::format(
                    "Redis Sentinel master {:?} is failing over: no new master announced within {} ms",
                    sentinel_.master, wait.count()));
            changed_.wait_until(lock, std::min(deadline, fence_ends_));
            continue;
        }
        if (known_ && !stale_) return {*known_, generation_.load(std::memory_order_acquire)};
        if (discovering_ || now < retry_after_) {
            if (now >= deadline) {
                if (problem.empty()) problem = last_problem_;
                if (problem.empty())
                    problem = fmt::format("Redis Sentinel: still looking for master {:?} after {} ms",
                                          sentinel_.master, wait.count());
                throw ConnectionError(problem);
            }
            changed_.wait_until(lock, discovering_ ? deadline : std::min(deadline, retry_after_));
            continue;
        }
        discovering_ = true;
        lock.unlock();
        Found found;
        try {
            found = discover();
        } catch (...) {
            lock.lock();
            discovering_ = false;
            changed_.notify_all();
            throw;
        }
        lock.lock();
        discovering_ = false;
        changed_.notify_all();
        if (fenced_) continue;  // a failover was announced meanwhile
        if (found.address) {
            set_master_locked(*found.address);
            return {*known_, generation_.load(std::memory_order_acquire)};
        }
        problem = found.problem;
        last_problem_ = found.problem;
        // No sentinel, or none knows the master: say so now. A named master that is down or not
        // (yet) a master: a failover is probably under way, so look again.
        if (!found.any_sentinel || found.unknown || Clock::now() + kRetryPause >= deadline)
            throw ConnectionError(problem);
        retry_after_ = Clock::now() + kRetryPause;
    }
}

void SentinelMonitor::suspect(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    if (generation == generation_.load(std::memory_order_acquire) && !fenced_) stale_ = true;
}

void SentinelMonitor::start_watcher_locked() {
    if (watching_ || stop_) return;
    watching_ = true;
    for (std::size_t i = 0; i < sentinel_.sentinels.size(); ++i)
        watchers_.emplace_back([this, i] { watch(i); });
}

void SentinelMonitor::watch(std::size_t index) {
    const ConnectionOptions so = sentinel_options(sentinel_.sentinels[index]);
    const auto timeout =
        so.command_timeout.count() > 0 ? so.command_timeout : std::chrono::milliseconds(2000);
    bool subscribed_before = false;
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stop_) return;
        }
        try {
            auto link = Link::open(so, sentinel_tls_.get());
            std::vector<std::string_view> channels{kSwitchMaster, kPromoting};
            for (const char* a : kAborts) channels.push_back(a);
            CommandBuffer subscribe;
            subscribe.add("SUBSCRIBE", channels);
            std::string_view request = subscribe.data();
            // Pushed messages are replies nobody asked for: owe the link plenty.
            constexpr std::size_t owed = std::size_t{1} << 40;
            link->send({&request, 1}, owed, deadline_after(timeout), timeout.count());
            for (std::size_t i = 0; i < kChannels; ++i)
                link->receive(deadline_after(timeout), timeout.count());
            if (subscribed_before) {
                // Events may have been missed while unsubscribed.
                std::lock_guard lock(mutex_);
                if (known_ && !fenced_) stale_ = true;
            }
            subscribed_before = true;
            for (;;) {
                {
                    std::lock_guard lock(mutex_);
                    if (stop_) return;
                }
                Reply message;
                try {
                    message = link->receive(deadline_after(kWatchTick), kWatchTick.count());
                } catch (const TimeoutError&) {
                    continue;
                }
                if (message.is_array() && message.size() == 3 && message[0].view() == "message")
                    on_event(index, message[1].as_string(), message[2].as_string());
            }
        } catch (const Error&) {
            // Sentinel down or unreachable: try again shortly.
        }
        std::unique_lock lock(mutex_);
        if (changed_.wait_for(lock, kResubscribe, [&] { return stop_; })) return;
    }
}

void SentinelMonitor::on_event(std::size_t from, const std::string& channel, const std::string& payload) {
    auto w = words(payload);
    std::lock_guard lock(mutex_);
    if (channel == kSwitchMaster) {
        // <name> <old ip> <old port> <new ip> <new port>
        if (w.size() != 5 || w[0] != sentinel_.master) return;
        if (auto port = parse_port(w[4])) set_master_locked(Endpoint{w[3], *port});
    } else if (channel == kPromoting) {
        // slave <ip:port> <ip> <port> @ <name> <master ip> <master port>
        if (w.size() < 6 || w[5] != sentinel_.master) return;
        fenced_ = true;
        fence_from_ = from;
        const auto limit = options_.command_timeout.count() > 0 ? options_.command_timeout : 5000ms;
        fence_ends_ = Clock::now() + limit;
        generation_.fetch_add(1, std::memory_order_acq_rel);  // nothing more goes to the old master
        changed_.notify_all();
    } else {
        // An abort: master <name> <ip> <port>. Only the sentinel that fenced can end it.
        if (w.size() < 2 || w[1] != sentinel_.master || !fenced_ || fence_from_ != from) return;
        fenced_ = false;
        stale_ = true;
        changed_.notify_all();
    }
}

}  // namespace retools::detail
