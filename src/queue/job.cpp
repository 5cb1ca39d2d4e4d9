#include <charconv>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/job.hpp>

#include "python/utf8.hpp"
#include "queue/json_limits.hpp"
#include "queue/keys.hpp"
#include "queue/python_json.hpp"
#include "queue/topology.hpp"

namespace retools {

namespace detail {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void append_u_escape(std::uint32_t unit, std::string& out) {
    char buf[6] = {'\\',
                   'u',
                   hex_digits[(unit >> 12) & 0xf],
                   hex_digits[(unit >> 8) & 0xf],
                   hex_digits[(unit >> 4) & 0xf],
                   hex_digits[unit & 0xf]};
    out.append(buf, sizeof buf);
}

// Decodes one UTF-8 sequence starting at s[i]; returns its code point and
// advances i, or throws for invalid UTF-8 (Python could not have written it).
std::uint32_t decode_utf8(std::string_view s, std::size_t& i, std::string_view what) {
    std::uint32_t cp;
    const std::size_t n = detail::utf8_sequence(s, i, cp);
    if (n == 0) throw QueueError(fmt::format("{} holds a string that is not valid UTF-8", what));
    i += n;
    return cp;
}

}  // namespace

void python_json_string(std::string_view text, std::string& out, std::string_view what) {
    out.push_back('"');
    std::size_t run = 0;  // start of the current run of bytes copied as they are
    std::size_t i = 0;
    while (i < text.size()) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            ++i;
            continue;
        }
        out.append(text.data() + run, i - run);
        switch (c) {
            case '"':
                out.append("\\\"");
                ++i;
                break;
            case '\\':
                out.append("\\\\");
                ++i;
                break;
            case '\n':
                out.append("\\n");
                ++i;
                break;
            case '\r':
                out.append("\\r");
                ++i;
                break;
            case '\t':
                out.append("\\t");
                ++i;
                break;
            case '\b':
                out.append("\\b");
                ++i;
                break;
            case '\f':
                out.append("\\f");
                ++i;
                break;
            default: {
                std::uint32_t cp = decode_utf8(text, i, what);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    append_u_escape(0xd800 | (cp >> 10), out);
                    append_u_escape(0xdc00 | (cp & 0x3ff), out);
                } else {
                    append_u_escape(cp, out);
                }
            }
        }
        run = i;
    }
    out.append(text.data() + run, text.size() - run);
    out.push_back('"');
}

void python_json_dump(const nlohmann::json& value, std::string& out, std::string_view what) {
    using value_t = nlohmann::json::value_t;
    switch (value.type()) {
        case value_t::null:
            out.append("null");
            return;
        case value_t::boolean:
            out.append(value.get<bool>() ? "true" : "false");
            return;
        case value_t::number_integer:
        case value_t::number_unsigned: {
            char buf[24];
            auto res = value.is_number_unsigned()
                           ? std::to_chars(buf, buf + sizeof buf, value.get<std::uint64_t>())
                           : std::to_chars(buf, buf + sizeof buf, value.get<std::int64_t>());
            out.append(buf, static_cast<std::size_t>(res.ptr - buf));
            return;
        }
        case value_t::number_float: {
            double d = value.get<double>();
            // Python would write NaN/Infinity, which is not JSON: refuse instead.
            if (!std::isfinite(d))
                throw QueueError(fmt::format("{} holds a non-finite number ({})", what, python_repr(d)));
            out.append(python_repr(d));
            return;
        }
        case value_t::string:
            python_json_string(value.get_ref<const std::string&>(), out, what);
            return;
        case value_t::array: {
            out.push_back('[');
            bool first = true;
            for (const auto& element : value) {
                if (!first) out.append(", ");
                first = false;
                python_json_dump(element, out, what);
            }
            out.push_back(']');
            return;
        }
        case value_t::object: {
            out.push_back('{');
            bool first = true;
            for (const auto& [key, element] : value.items()) {
                if (!first) out.append(", ");
                first = false;
                python_json_string(key, out, what);
                out.append(": ");
                python_json_dump(element, out, what);
            }
            out.push_back('}');
            return;
        }
        case value_t::binary:
        case value_t::discarded:
            break;
    }
    throw QueueError(fmt::format("{} holds a value JSON cannot represent", what));
}

// The one rule for queue names, QueueManager's and Worker's alike: ':' and
// ',' separate them in worker ids, a newline would split a worker's record.
void validate_queue_name(std::string_view name) {
    if (name.empty()) throw ConfigurationError("queue name is empty");
    if (name.find_first_of(":,\n\r") != std::string_view::npos)
        throw ConfigurationError(fmt::format(
            "queue name {:?} contains ':', ',' or a line break (separators in worker ids and records)", name));
}

void validate_job_name(std::string_view name) {
    if (name.empty()) throw ConfigurationError("job name is empty");
}

}  // namespace detail

namespace {

const nlohmann::json& field(const nlohmann::json& payload, const char* name) {
    auto it = payload.find(name);
    if (it == payload.end()) throw QueueError(fmt::format("job payload has no \"{}\" field", name));
    return *it;
}

std::string non_empty_string(const nlohmann::json& payload, const char* name) {
    const auto& v = field(payload, name);
    if (!v.is_string() || v.get_ref<const std::string&>().empty())
        throw QueueError(fmt::format("job payload field \"{}\" is not a non-empty string", name));
    return v.get<std::string>();
}

nlohmann::json object_field(const nlohmann::json& payload, const char* name, bool optional) {
    auto it = payload.find(name);
    if (it == payload.end()) {
        if (optional) return nlohmann::json::object();
        throw QueueError(fmt::format("job payload has no \"{}\" field", name));
    }
    if (it->is_null() && optional) return nlohmann::json::object();
    if (!it->is_object())
        throw QueueError(
            fmt::format("job payload field \"{}\" is a {}, not an object", name, it->type_name()));
    return *it;
}

}  // namespace

Job Job::from_payload(std::string_view payload, std::string_view queue_name, Connection conn) {
    // Checked before parsing: parsing, copying and writing a value recurse per level.
    detail::check_json_depth(payload, "job payload");
    nlohmann::json data;
    try {
        data = nlohmann::json::parse(payload);
    } catch (const nlohmann::json::exception& e) {
        throw QueueError(fmt::format("job payload is not valid JSON: {}", e.what()));
    }
    if (!data.is_object())
        throw QueueError(fmt::format("job payload is a JSON {}, not an object", data.type_name()));
    Job job{std::move(conn)};
    job.id_ = non_empty_string(data, "job_id");
    job.name_ = non_empty_string(data, "job");
    job.queue_ = std::string(queue_name);
    job.kwargs_ = object_field(data, "kwargs", false);
    job.events_ = object_field(data, "events", false);
    for (const auto& [event, handlers] : job.events_.items()) {
        bool ok = handlers.is_array();
        if (ok)
            for (const auto& h : handlers) ok = ok && h.is_string();
        if (!ok)
            throw QueueError(fmt::format("job payload event \"{}\" is not a list of handler names", event));
    }
    // The original reads metadata with a default; a null state is treated alike.
    job.metadata_ = object_field(data, "metadata", true);
    if (!data.contains("state")) throw QueueError("job payload has no \"state\" field");
    job.state_ = object_field(data, "state", true);
    job.payload_ = std::string(payload);
    return job;
}

std::string Job::queue_key() const {
    return detail::queue::topology_of(conn_).queue_key(queue_);
}

std::vector<std::string> Job::handlers(std::string_view event) const {
    std::vector<std::string> out;
    auto it = events_.find(event);
    if (it != events_.end())
        for (const auto& h : *it) out.push_back(h.get<std::string>());
    return out;
}

nlohmann::json Job::to_dict() const {
    return nlohmann::json{{"job_id", id_},     {"job", name_},          {"kwargs", kwargs_},
                          {"events", events_}, {"metadata", metadata_}, {"state", state_}};
}

std::string Job::to_json() const {
    if (!metadata_.is_object()) throw QueueError(fmt::format("job {} metadata is not an object", id_));
    if (!state_.is_object()) throw QueueError(fmt::format("job {} state is not an object", id_));
    std::string out;
    out.reserve(payload_.size() + 128);
    out.append("{\"job_id\": ");
    detail::python_json_string(id_, out, "job id");
    out.append(", \"job\": ");
    detail::python_json_string(name_, out, "job name");
    out.append(", \"kwargs\": ");
    detail::python_json_dump(kwargs_, out, "kwargs");
    out.append(", \"events\": ");
    detail::python_json_dump(events_, out, "events");
    out.append(", \"metadata\": ");
    detail::python_json_dump(metadata_, out, "metadata");
    out.append(", \"state\": ");
    detail::python_json_dump(state_, out, "state");
    out.push_back('}');
    return out;
}

std::string Job::enqueue() const {
    detail::validate_queue_name(queue_);
    Pipeline p;
    p.command("RPUSH", queue_key(), to_json());
    p.command("SADD", detail::queue_keys::queues, queue_);
    for (const auto& reply : conn_.execute(p)) reply.check();
    return id_;
}

int Job::retries_done() const {
    auto it = state_.find("retried");
    if (it == state_.end() || it->is_null()) return 0;
    if (!it->is_number_integer() || it->get<long long>() < 0)
        throw QueueError(fmt::format("job {} state \"retried\" is not a non-negative integer", id_));
    return it->get<int>();
}

std::optional<std::chrono::duration<double>> Job::next_retry_delay() const {
    auto it = metadata_.find("retries");
    if (it == metadata_.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer())
        throw QueueError(fmt::format("job {} metadata \"retries\" is not an integer", id_));
    long long allowed = it->get<long long>();
    int done = retries_done();
    if (done >= allowed) return std::nullopt;
    double backoff = 1.0;
    auto b = metadata_.find("retry_backoff");
    if (b != metadata_.end() && !b->is_null()) {
        if (!b->is_number() || b->get<double>() < 0 || !std::isfinite(b->get<double>()))
            throw QueueError(
                fmt::format("job {} metadata \"retry_backoff\" is not a non-negative number", id_));
        backoff = b->get<double>();
    }
    double cap = 3600.0;
    auto m = metadata_.find("retry_max_delay");
    if (m != metadata_.end() && !m->is_null()) {
        if (!m->is_number() || m->get<double>() < 0 || !std::isfinite(m->get<double>()))
            throw QueueError(
                fmt::format("job {} metadata \"retry_max_delay\" is not a non-negative number", id_));
        cap = m->get<double>();
    }
    return std::chrono::duration<double>(std::min(std::ldexp(backoff, std::min(done, 60)), cap));
}

std::optional<std::chrono::seconds> Job::result_ttl() const {
    auto it = metadata_.find("result_ttl");
    if (it == metadata_.end() || it->is_null()) return std::nullopt;
    if (!it->is_number() || !(it->get<double>() >= 0) || !std::isfinite(it->get<double>()))
        throw QueueError(fmt::format("job {} metadata \"result_ttl\" is not a non-negative number", id_));
    // Redis expires take whole seconds; round a fraction up so a result never vanishes at once.
    auto seconds = static_cast<long long>(std::ceil(it->get<double>()));
    if (seconds == 0) return std::nullopt;
    return std::chrono::seconds(seconds);
}

}  // namespace retools
