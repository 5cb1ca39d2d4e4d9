#include "client/cluster_redirect_fsm.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace retools::detail {

using namespace std::chrono_literals;

namespace {

constexpr std::size_t kSlots = 16384;
constexpr std::size_t kSeenKept = 32;  // enough to see any ping-pong; bounds the memory

}  // namespace

std::optional<Redirection> parse_redirection(std::string_view message, const Endpoint& from) {
    auto space = message.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    std::string_view rest = message.substr(space + 1);
    auto space2 = rest.find(' ');
    if (space2 == std::string_view::npos) return std::nullopt;
    unsigned slot = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + space2, slot);
    if (ec != std::errc{} || end != rest.data() + space2 || slot >= kSlots) return std::nullopt;
    std::string_view address = rest.substr(space2 + 1);
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    int port = 0;
    auto [pend, pec] = std::from_chars(address.data() + colon + 1, address.data() + address.size(), port);
    if (pec != std::errc{} || pend != address.data() + address.size() || port <= 0 || port > 65535)
        return std::nullopt;
    std::string host(address.substr(0, colon));
    if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty()) host = from.host;
    return Redirection{static_cast<std::uint16_t>(slot), Endpoint{host, port}};
}

std::chrono::milliseconds stall_pause(int n) noexcept {
    return std::min<std::chrono::milliseconds>(1ms * (1 << std::clamp(n, 0, 6)), 50ms);
}

std::chrono::milliseconds retry_pause(int n) noexcept {
    return std::min<std::chrono::milliseconds>(5ms * (1 << std::clamp(n, 0, 6)), 100ms);
}

bool map_refresh_due(bool stale, std::chrono::steady_clock::duration since_tried,
                     std::chrono::steady_clock::duration since_read,
                     std::chrono::steady_clock::duration interval) noexcept {
    if (since_tried < kMinMapRefreshGap) return false;
    return stale || (interval.count() > 0 && since_read > interval);
}

RedirectStep RedirectFsm::resend_after(std::chrono::milliseconds pause, Clock::time_point now) const {
    // Never sleep past the deadline: the last send still gets its chance.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now);
    RedirectStep step;
    step.action = RedirectStep::Action::resend;
    step.pause = std::clamp(pause, 0ms, std::max(left, 0ms));
    return step;
}

RedirectStep RedirectFsm::on_reply(RedirectKind kind, std::string_view message, const Endpoint& from,
                                   Clock::time_point now) {
    ++attempts_;
    if (kind == RedirectKind::none) return {};
    last_ = fmt::format("{} (from {}:{})", message.substr(0, 200), from.host, from.port);
    if (now >= deadline_) return {.action = RedirectStep::Action::give_up};
    if (kind == RedirectKind::retry) {
        // TRYAGAIN, CLUSTERDOWN ...: nothing ran; where the map says, a little later.
        RedirectStep step = resend_after(retry_pause(retries_++), now);
        step.refresh_map = true;
        return step;
    }
    const auto where = parse_redirection(message, from);
    if (!where) return {.action = RedirectStep::Action::give_up};  // not a redirection we can follow
    // The same hop again (a MOVED ping-pong between the importing and the
    // migrating node, a node that has not learnt of the move yet), or a node
    // sending us to itself: no progress, so wait before following it.
    const bool again = where->to == from || std::any_of(seen_.begin(), seen_.end(), [&](const Seen& s) {
                           return s.kind == kind && s.from == from && s.to == where->to;
                       });
    if (!again && seen_.size() < kSeenKept) seen_.push_back(Seen{kind, from, where->to});
    RedirectStep step = resend_after(again ? stall_pause(stalls_++) : 0ms, now);
    // Straight to the node named, not through the map: a map read from a
    // node that has not learnt of the move yet would send us back.
    step.to = where->to;
    step.slot = where->slot;
    if (kind == RedirectKind::ask) {
        step.asking = true;  // this request only; the slot still belongs to `from`
    } else {
        step.correct_map = true;
        step.refresh_map = true;  // a slot seldom moves alone
    }
    return step;
}

RedirectStep RedirectFsm::on_connection_error(bool resendable, Clock::time_point now) {
    ++attempts_;
    if (!resendable || now >= deadline_) return {.action = RedirectStep::Action::give_up};
    RedirectStep step = resend_after(retry_pause(retries_++), now);
    step.refresh_map = true;  // a failover may have moved the slot's master
    return step;
}

std::string RedirectFsm::give_up_message(std::string_view where, Clock::time_point now) const {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_);
    std::string hops;
    for (const Seen& s : seen_)
        hops += fmt::format("{}{}:{} -> {}:{}", hops.empty() ? "" : ", ", s.from.host, s.from.port, s.to.host,
                            s.to.port);
    return fmt::format(
        "Redis {}: the cluster kept redirecting the request for {} for {} ms ({} attempts, last reply: "
        "{}; redirections seen: {}); the request did not run. The cluster is resharding, failing over or "
        "its nodes disagree about the slot map: retry later",
        where, slot_ ? fmt::format("slot {}", *slot_) : std::string("a keyless command"), waited.count(),
        attempts_, last_.empty() ? std::string("none") : last_, hops.empty() ? std::string("none") : hops);
}

}  // namespace retools::detail
