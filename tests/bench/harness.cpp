#include "harness.hpp"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "process.hpp"

namespace bench {

double run_threads(std::size_t threads, std::size_t total,
                   const std::function<void(std::size_t, std::size_t)>& fn) {
    std::barrier start(static_cast<std::ptrdiff_t>(threads + 1));
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (std::size_t t = 0; t < threads; ++t) {
        std::size_t ops = total / threads + (t < total % threads ? 1 : 0);
        pool.emplace_back([&, t, ops] {
            start.arrive_and_wait();
            fn(t, ops);
        });
    }
    auto begin = Clock::now();
    start.arrive_and_wait();
    for (auto& th : pool) th.join();
    return std::chrono::duration<double>(Clock::now() - begin).count();
}

double rss_mb() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
    return 0;
}

double peak_rss_mb() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
}

Run in_child(const std::function<Run()>& fn, std::chrono::seconds timeout) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    auto child = retools::test::ChildProcess::fork([&]() -> int {
        ::close(fds[0]);
        std::string out;
        int code = 0;
        try {
            Run run = fn();
            nlohmann::json j{{"seconds", run.seconds}, {"metrics", nlohmann::json::object()}};
            for (auto& [name, value] : run.metrics) j["metrics"][name] = value;
            out = j.dump();
        } catch (const std::exception& e) {
            out = nlohmann::json{{"error", e.what()}}.dump();
            code = 1;
        }
        std::size_t done = 0;
        while (done < out.size()) {
            ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
            if (n <= 0) break;
            done += static_cast<std::size_t>(n);
        }
        ::close(fds[1]);
        return code;
    });
    ::close(fds[1]);
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int code = child.exit_code(timeout);
    if (text.empty()) throw std::runtime_error(fmt::format("benchmark child exited with {}", code));
    auto j = nlohmann::json::parse(text);
    if (j.contains("error")) throw std::runtime_error(j["error"].get<std::string>());
    Run run;
    run.seconds = j["seconds"].get<double>();
    for (auto& [name, value] : j["metrics"].items()) run.metrics.emplace_back(name, value.get<double>());
    return run;
}

// --- results ----------------------------------------------------------------

namespace {

double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char* const kRetools = "retools";
const char* const kFloor = "floor";

}  // namespace

std::optional<double> Cell::median() const {
    if (rates.empty()) return std::nullopt;
    return median_of(rates);
}

std::optional<double> Results::rate(const std::string& row, const std::string& column) const {
    auto r = cells.find(row);
    if (r == cells.end()) return std::nullopt;
    auto c = r->second.find(column);
    if (c == r->second.end()) return std::nullopt;
    return c->second.median();
}

std::optional<double> Results::metric(const std::string& row, const std::string& column,
                                      const std::string& name) const {
    auto r = cells.find(row);
    if (r == cells.end()) return std::nullopt;
    auto c = r->second.find(column);
    if (c == r->second.end()) return std::nullopt;
    auto m = c->second.metrics.find(name);
    if (m == c->second.metrics.end() || m->second.empty()) return std::nullopt;
    return median_of(m->second);
}

std::string format_rate(double rate) {
    auto whole = static_cast<long long>(std::llround(rate));
    std::string digits = std::to_string(whole);
    std::string out;
    int n = 0;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
        if (n && n % 3 == 0) out.insert(out.begin(), ',');
        out.insert(out.begin(), *it);
        ++n;
    }
    return out;
}

namespace {

void record(Cell& cell, std::size_t count, const Run& run) {
    if (run.seconds > 0) cell.rates.push_back(static_cast<double>(count) / run.seconds);
    for (auto& [name, value] : run.metrics) cell.metrics[name].push_back(value);
}

void run_variant(const Env& env, const Row& row, const char* column, const RunFn& fn, Results& results) {
    Cell& cell = results.cells[row.id][column];
    try {
        env.conn.command("FLUSHDB");
        auto round_trips = env.conn.round_trips();
        Run run = fn(env, row.count);
        // Round trips per operation through the shared pool (work done in a
        // forked child is not counted here).
        round_trips = env.conn.round_trips() - round_trips;
        if (column == std::string_view(kRetools) && round_trips > 0)
            run.metrics.emplace_back("round trips/op",
                                     static_cast<double>(round_trips) / static_cast<double>(row.count));
        record(cell, row.count, run);
        fmt::print(stderr, "  {:<34} {:<8} {:>12} {}\n", row.label, column,
                   run.seconds > 0 ? format_rate(static_cast<double>(row.count) / run.seconds) : "-",
                   row.unit);
    } catch (const std::exception& e) {
        cell.problem = fmt::format("failed: {}", e.what());
        fmt::print(stderr, "  {:<34} {:<8} FAILED: {}\n", row.label, column, e.what());
    }
}

std::string read_all(const std::string& path) {
    return retools::test::read_file(path);
}

void run_peer(const Env& env, const Peer& peer, Results& results) {
    auto note_problem = [&](const std::string& why) {
        results.peer_problem[peer.name] = why;
        for (auto& id : peer.rows) results.cells[id][peer.name].problem = why;
    };
    std::string out_file = fmt::format("/tmp/retools-bench-peer-{}-{}.out", ::getpid(), peer.db);
    std::vector<std::string> argv = peer.command;
    std::string url = fmt::format("redis://{}:{}/{}", env.host, env.port, peer.db);
    for (std::string a :
         {std::string("--url"), url, std::string("--ops"), std::to_string(env.counts.ops),
          std::string("--batches"), std::to_string(env.counts.batches), std::string("--jobs"),
          std::to_string(env.counts.jobs), std::string("--fork-jobs"), std::to_string(env.counts.fork_jobs)})
        argv.push_back(a);
    fmt::print(stderr, "  peer {} ...\n", peer.name);
    int code;
    {
        auto child = retools::test::ChildProcess::spawn(argv, {}, out_file);
        code = child.exit_code(std::chrono::seconds(900));
    }
    std::string text = read_all(out_file);
    std::remove(out_file.c_str());
    std::istringstream lines(text);
    std::string line;
    bool any = false;
    while (std::getline(lines, line)) {
        if (line.rfind("BENCH ", 0) != 0) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line.substr(6));
        } catch (const std::exception&) {
            continue;
        }
        if (j.contains("missing")) {
            note_problem(fmt::format("missing: {}", j["missing"].get<std::string>()));
            return;
        }
        std::string id = j.value("row", "");
        double seconds = j.value("seconds", 0.0);
        auto count = j.value("count", std::size_t{0});
        Cell& cell = results.cells[id][peer.name];
        Run run{seconds, {}};
        if (j.contains("metrics"))
            for (auto& [name, value] : j["metrics"].items())
                run.metrics.emplace_back(name, value.get<double>());
        record(cell, count, run);
        any = true;
        fmt::print(stderr, "  {:<34} {:<8} {:>12}\n", id, peer.name,
                   seconds > 0 ? format_rate(static_cast<double>(count) / seconds) : "-");
    }
    if (code == 127 && !any) {
        note_problem(fmt::format("missing: cannot run {} (install {})", peer.command.front(), peer.package));
    } else if (code != 0) {
        // Keep what it measured; say why the rest is absent.
        std::string tail = text.size() > 300 ? text.substr(text.size() - 300) : text;
        std::replace(tail.begin(), tail.end(), '\n', ' ');
        results.peer_problem[peer.name] = fmt::format("failed (exit {}): {}", code, tail);
        for (auto& id : peer.rows) {
            Cell& cell = results.cells[id][peer.name];
            if (cell.rates.empty()) cell.problem = "failed";
        }
        fmt::print(stderr, "  peer {} failed with exit code {}: {}\n", peer.name, code, tail);
    }
}

}  // namespace

Results run_all(const Env& env, const std::vector<Row>& rows, const std::vector<Peer>& peers) {
    Results results;
    results.rows = rows;
    results.peers = peers;
    results.counts = env.counts;
    for (int round = 0; round < env.counts.rounds; ++round) {
        fmt::print(stderr, "round {}/{}\n", round + 1, env.counts.rounds);
        for (const Row& row : rows) {
            if (row.once && round > 0) continue;
            // Alternate which goes first so drift (other load, thermal) hits both alike.
            bool floor_first = round % 2 == 1;
            if (floor_first && row.floor) run_variant(env, row, kFloor, row.floor, results);
            if (row.retools) run_variant(env, row, kRetools, row.retools, results);
            if (!floor_first && row.floor) run_variant(env, row, kFloor, row.floor, results);
        }
        for (const Peer& peer : peers) {
            if (round >= env.counts.peer_rounds) break;
            auto known = results.peer_problem.find(peer.name);
            if (known != results.peer_problem.end() && known->second.rfind("missing", 0) == 0) continue;
            run_peer(env, peer, results);
        }
    }
    return results;
}

// --- report -----------------------------------------------------------------

namespace {

std::string first_line_of(const std::string& path, const std::string& key) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) {
            auto colon = line.find(':');
            auto value = colon == std::string::npos ? line : line.substr(colon + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    return "unknown";
}

std::string command_output(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
        char buf[256];
        while (std::fgets(buf, sizeof buf, p)) out += buf;
        ::pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
}

std::string machine() {
    utsname u{};
    ::uname(&u);
    std::string cpu = first_line_of("/proc/cpuinfo", "model name");
    double mem_gb =
        std::strtod(first_line_of("/proc/meminfo", "MemTotal").c_str(), nullptr) / 1024.0 / 1024.0;
    std::string redis = command_output("redis-server --version 2>/dev/null");
    auto v = redis.find("v=");
    if (v != std::string::npos) redis = redis.substr(v + 2, redis.find(' ', v) - v - 2);
    return fmt::format("{} × {} ({} {}), {:.0f} GB RAM, redis-server {} on loopback TCP",
                       std::thread::hardware_concurrency(), cpu, u.sysname, u.release, mem_gb, redis);
}

std::string cell_text(const Results& results, const Row& row, const std::string& column) {
    if (column == kRetools && !row.retools) return "not built";
    auto r = results.cells.find(row.id);
    if (r == results.cells.end()) return "";
    auto c = r->second.find(column);
    if (c == r->second.end()) return "";
    if (auto m = c->second.median()) return format_rate(*m);
    if (c->second.problem.rfind("missing", 0) == 0) return "missing";
    if (!c->second.problem.empty()) return "failed";
    return "";
}

std::string notes(const Results& results, const Row& row) {
    std::vector<std::string> parts;
    auto r = results.cells.find(row.id);
    if (r == results.cells.end()) return "";
    for (auto& [column, cell] : r->second)
        for (auto& [name, values] : cell.metrics)
            if (!values.empty())
                parts.push_back(
                    fmt::format(fmt::runtime(median_of(values) < 10 ? "{} {}: {:.2f}" : "{} {}: {:.1f}"),
                                column, name, median_of(values)));
    if (row.once) parts.push_back("single run");
    std::string out;
    for (auto& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
}

}  // namespace

std::string render_markdown(const Results& results, const std::vector<Target>& targets,
                            const std::string& title) {
    std::string md;
    auto now = std::time(nullptr);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    const Counts& c = results.counts;
    md += fmt::format("### {}\n\n", title);
    md += fmt::format(
        "Run {} on {}. Medians of {} alternating rounds ({} for peers); rates per second (higher is better). "
        "Counts per run: {} calls per single-call/threaded row, {} × 1,000 jobs per batch row, "
        "{} jobs per threaded worker drain, {} jobs per fork-per-job drain.\n\n",
        date, machine(), c.rounds, std::min(c.rounds, c.peer_rounds), format_rate(static_cast<double>(c.ops)),
        c.batches, format_rate(static_cast<double>(c.jobs)), format_rate(static_cast<double>(c.fork_jobs)));
    md += "| operation | unit | retools | floor | ×floor |";
    for (auto& p : results.peers) md += fmt::format(" {} |", p.name);
    md += " ×best peer | notes |\n|---|---|--:|--:|--:|";
    for (std::size_t i = 0; i < results.peers.size(); ++i) md += "--:|";
    md += "--:|---|\n";
    for (const Row& row : results.rows) {
        auto ours = results.rate(row.id, kRetools);
        auto floor = results.rate(row.id, kFloor);
        std::string ratio;
        if (ours && floor) {
            ratio = fmt::format("{:.2f}", *ours / *floor);
            if (row.floor_target > 0 && *ours / *floor < row.floor_target) ratio += " ⚠";
        }
        std::optional<double> best_peer;
        for (auto& p : results.peers)
            if (auto v = results.rate(row.id, p.name); v && (!best_peer || *v > *best_peer)) best_peer = v;
        md += fmt::format("| {} | {} | {} | {} | {} |", row.label, row.unit,
                          cell_text(results, row, kRetools), cell_text(results, row, kFloor), ratio);
        for (auto& p : results.peers) md += fmt::format(" {} |", cell_text(results, row, p.name));
        md += fmt::format(" {} | {} |\n", ours && best_peer ? fmt::format("{:.1f}", *ours / *best_peer) : "",
                          notes(results, row));
    }
    md +=
        "\n*floor*: raw hiredis on one connection (or as many connections as threads) sending exactly the "
        "round trips the operation needs. ⚠: below its target ratio.\n";
    if (!results.peer_problem.empty()) {
        md += "\nPeers not (fully) measured:\n\n";
        for (auto& [peer, why] : results.peer_problem) md += fmt::format("- {}: {}\n", peer, why);
    }
    if (!targets.empty()) {
        md += "\n| target | measured | |\n|---|--:|---|\n";
        for (auto& t : targets) {
            auto v = t.measured ? t.measured() : std::nullopt;
            std::string verdict = !v                                                        ? "not measured"
                                  : (t.at_most > 0 ? (*v < t.at_most) : (*v >= t.at_least)) ? "met"
                                                                                            : "**missed**";
            md += fmt::format("| {} | {} | {} |\n", t.text, v ? fmt::format(fmt::runtime(t.format), *v) : "—",
                              verdict);
        }
    }
    return md;
}

}  // namespace bench
