// retools-worker: runs jobs from Redis queues, like the original's command.
//
//   retools-worker [--url redis://...] [--interval N] [-b] [--concurrency N] [--fork]
//                  [--burst] [--max-jobs N] [--quiet] --load ./libmyjobs.so high,medium,main

#include <dlfcn.h>
#include <sys/prctl.h>

#include <charconv>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <retools/retools.hpp>
#include <retools/worker.hpp>

namespace {

constexpr const char* usage =
    "usage: retools-worker [options] QUEUES\n"
    "\n"
    "Runs jobs from the comma-separated QUEUES, highest priority first (e.g. high,medium,main).\n"
    "\n"
    "options:\n"
    "  --url URL          Redis to use (default: $REDIS_URL, else redis://127.0.0.1:6379/0)\n"
    "  --load PATH        job library to dlopen (repeatable); its RETOOLS_REGISTER_* run at load\n"
    "  --interval N       polling interval / longest blocking wait, seconds (default 5)\n"
    "  -b                 block on the queues instead of polling (wakes at once on enqueue)\n"
    "  --concurrency N    jobs at once: threads, or children with --fork (default 1)\n"
    "  --fork             run every job in a forked child process (the original's isolation)\n"
    "  --burst            exit once every queue is empty\n"
    "  --max-jobs N       exit after N jobs\n"
    "  --quiet            log failures only, not one line per job\n"
    "  -h, --help         this text\n"
    "\n"
    "signals: TERM/INT stop now, QUIT finish running jobs then stop, USR1 kill running children,\n"
    "USR2 pause, CONT resume.\n";

[[noreturn]] void fail(std::string_view message) {
    fmt::print(stderr, "retools-worker: {}\n\n{}", message, usage);
    std::exit(2);
}

template <class T>
T number(std::string_view option, std::string_view text) {
    T value{};
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || value < T{})
        fail(fmt::format("{} needs a non-negative number, got '{}'", option, text));
    return value;
}

std::vector<std::string> split(std::string_view text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto comma = text.find(',', start);
        out.emplace_back(
            text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (comma == std::string_view::npos) return out;
        start = comma + 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string url;
    std::vector<std::string> libraries;
    std::string queues_arg;
    retools::WorkOptions work;
    retools::WorkerOptions options{.log = retools::WorkerLog::jobs};

    std::vector<std::string_view> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        auto value = [&]() -> std::string_view {
            if (auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos)
                return a.substr(eq + 1);
            if (i + 1 >= args.size()) fail(fmt::format("{} needs a value", a));
            return args[++i];
        };
        auto is = [&](std::string_view name) {
            return a == name || (a.starts_with(name) && a.size() > name.size() && a[name.size()] == '=');
        };
        if (a == "-h" || a == "--help") {
            fmt::print("{}", usage);
            return 0;
        } else if (is("--url")) {
            url = value();
        } else if (is("--load")) {
            libraries.emplace_back(value());
        } else if (is("--interval")) {
            double seconds = number<double>("--interval", value());
            work.interval = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
        } else if (a == "-b" || a == "--blocking") {
            work.blocking = true;
        } else if (is("--concurrency")) {
            options.concurrency = number<std::size_t>("--concurrency", value());
        } else if (a == "--fork") {
            options.mode = retools::ExecutionMode::fork;
        } else if (a == "--burst") {
            work.burst = true;
        } else if (is("--max-jobs")) {
            work.max_jobs = number<std::size_t>("--max-jobs", value());
        } else if (a == "--quiet") {
            options.log = retools::WorkerLog::failures;
        } else if (a.starts_with("-")) {
            fail(fmt::format("unknown option {}", a));
        } else if (queues_arg.empty()) {
            queues_arg = a;
        } else {
            fail(fmt::format("unexpected argument {}", a));
        }
    }
    if (queues_arg.empty()) fail("no queues given");

    for (const auto& lib : libraries) {
        // RTLD_GLOBAL: one library's jobs may call helpers of another.
        if (!::dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
            fmt::print(stderr, "retools-worker: cannot load {}: {}\n", lib, ::dlerror());
            return 2;
        }
    }

    try {
        if (!url.empty()) retools::global_connection() = retools::Connection{url};
        retools::Worker worker{split(queues_arg), options};
        // "retools: ..." in the process name: the original's dead-worker
        // pruning (ps | grep retools:) then sees this worker as alive.
        std::string title = "retools: " + queues_arg;
        ::prctl(PR_SET_NAME, title.c_str(), 0, 0, 0);
        fmt::print(stderr, "retools-worker: {} starting ({} job{} registered, {} mode, concurrency {})\n",
                   worker.id(), retools::JobRegistry::global().job_names().size(),
                   retools::JobRegistry::global().job_names().size() == 1 ? "" : "s",
                   options.mode == retools::ExecutionMode::fork ? "fork" : "thread", options.concurrency);
        retools::WorkSummary s = worker.work(work);
        fmt::print(stderr, "retools-worker: {} stopped: {} succeeded, {} failed, {} aborted, {} requeued\n",
                   worker.id(), s.succeeded, s.failed, s.aborted, s.requeued);
        return 0;
    } catch (const retools::ConfigurationError& e) {
        fmt::print(stderr, "retools-worker: {}\n", e.what());
        return 2;
    } catch (const retools::Error& e) {
        fmt::print(stderr, "retools-worker: {}\n", e.what());
        return 1;
    }
}
