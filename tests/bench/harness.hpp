#pragma once
// The benchmark harness: rows of measurements (retools beside its raw-hiredis
// floor), peer scripts run against the same server, medians of alternating
// rounds, and the table (terminal and Markdown).

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <retools/connection.hpp>

namespace retools::test {
class RedisCluster;
}

namespace bench {

using Clock = std::chrono::steady_clock;

/// How much work one run of each row does.
struct Counts {
    std::size_t ops = 20000;        // single-call and threaded rows: operations per run
    std::size_t batches = 100;      // batch enqueue: batches of 1,000 jobs per run
    std::size_t jobs = 20000;       // worker drain (thread mode) and peers' threaded workers
    std::size_t fork_jobs = 2000;   // fork-per-job workers (retools fork mode, RQ's Worker)
    std::size_t rss_jobs = 100000;  // RSS check: RSS after `jobs` vs after this many
    int rounds = 5;                 // alternating rounds; medians are quoted
    int peer_rounds = 3;            // rounds that also run the (slow) peers
};

/// What every benchmark gets: the private server and a pool on it.
struct Env {
    retools::Connection conn;
    std::string host;
    int port = 0;
    std::string url;  // redis://host:port/0
    Counts counts;
    std::string tls_url;  // rediss:// to the same server's TLS port; empty: none (an external --url)
    int tls_port = 0;     // that port
    std::string tls_ca;   // the CA certificate file that verifies it
    const retools::test::RedisCluster* cluster = nullptr;  // a private 3-master cluster; null: none
};

/// One timed run.
struct Run {
    double seconds = 0;
    /// Extra figures, medians of which go to the notes column (e.g. {"peak RSS MB", 41.2}).
    std::vector<std::pair<std::string, double>> metrics;
};

using RunFn = std::function<Run(const Env&, std::size_t count)>;

/// One line of the table.
struct Row {
    std::string id;     // stable name shared with the peer scripts
    std::string label;  // shown in the table
    std::string unit = "ops/s";
    std::size_t count = 0;  // operations (or jobs) per run
    RunFn retools;
    RunFn floor;              // empty: no floor for this row
    double floor_target = 0;  // the retools/floor ratio to reach; 0: none
    bool once = false;        // too slow to repeat: run in the first round only
};

/// A program measuring the same operations with another library.
struct Peer {
    std::string name;                  // column title
    std::string package;               // Debian package that provides it
    std::vector<std::string> command;  // interpreter and script; --url etc. are appended
    int db = 0;                        // database it may flush
    std::vector<std::string> rows;     // row ids it reports
};

/// An extra pass/miss line below the table.
struct Target {
    std::string text;
    std::function<std::optional<double>()> measured;  // nullopt: not measurable (missing)
    double at_least = 0;  // pass when measured >= at_least (or < at_most when set)
    double at_most = 0;
    std::string format = "{:.2f}x";
};

// --- measuring helpers ------------------------------------------------------

/// Seconds taken by `fn`.
template <class Fn>
double time_it(Fn&& fn) {
    auto start = Clock::now();
    fn();
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Runs `fn(thread_index, ops)` on `threads` threads, splitting `total` ops
/// between them; returns the wall seconds from a common start to the last finish.
double run_threads(std::size_t threads, std::size_t total,
                   const std::function<void(std::size_t, std::size_t)>& fn);

/// Resident set of this process now, and its peak, in MB.
double rss_mb();
double peak_rss_mb();

/// Forks; the child runs `fn` and sends back its Run. Keeps the worker's
/// memory figures (peak RSS) apart from the driver's. Throws on failure.
Run in_child(const std::function<Run()>& fn, std::chrono::seconds timeout);

// --- the run ----------------------------------------------------------------

struct Results;

/// Runs `rows` and `peers` for counts.rounds alternating rounds and returns
/// the medians. Prints progress to stderr.
Results run_all(const Env& env, const std::vector<Row>& rows, const std::vector<Peer>& peers);

struct Cell {
    std::vector<double> rates;  // one per round
    std::map<std::string, std::vector<double>> metrics;
    std::string problem;  // "missing (...)", "failed (...)"
    std::optional<double> median() const;
};

struct Results {
    std::vector<Row> rows;
    std::vector<Peer> peers;
    Counts counts;
    std::map<std::string, std::map<std::string, Cell>> cells;  // row id -> column -> cell
    std::map<std::string, std::string> peer_problem;           // peer -> why missing/failed
    std::optional<double> rate(const std::string& row, const std::string& column) const;
    std::optional<double> metric(const std::string& row, const std::string& column,
                                 const std::string& name) const;
};

/// The Markdown report: machine, counts, table, targets.
std::string render_markdown(const Results& results, const std::vector<Target>& targets,
                            const std::string& title);

/// `41,234` style.
std::string format_rate(double rate);

}  // namespace bench
