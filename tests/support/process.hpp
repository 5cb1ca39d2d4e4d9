#pragma once
// Real child processes for tests of crashes, signals and cross-process locking.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace retools::test {

/// A forked or exec'd child. The destructor SIGKILLs and reaps it if still running.
class ChildProcess {
public:
    /// Forks; the child runs `body` and exits with its return value (1 if it throws).
    static ChildProcess fork(std::function<int()> body);
    /// Forks and execs `argv[0]` (searched in PATH) with `env` added to the environment;
    /// stdout and stderr go to `output_file` when given.
    static ChildProcess spawn(const std::vector<std::string>& argv,
                              const std::vector<std::pair<std::string, std::string>>& env = {},
                              const std::string& output_file = {});

    ChildProcess(ChildProcess&& other) noexcept;
    ChildProcess& operator=(ChildProcess&& other) noexcept;
    ~ChildProcess();

    pid_t pid() const noexcept { return pid_; }
    bool running();
    void signal(int sig) const;
    /// Waits up to `within`; the raw wait status, or nullopt on timeout.
    std::optional<int> wait_for(std::chrono::milliseconds within);
    /// Waits (up to `within`) and returns the exit code; -signal if killed, -1000 on timeout.
    int exit_code(std::chrono::milliseconds within = std::chrono::seconds(30));

private:
    explicit ChildProcess(pid_t pid) : pid_(pid) {}
    pid_t pid_ = -1;
    std::optional<int> status_;
};

/// fork(), with the child killed when the test process dies (even by SIGKILL).
pid_t fork_tied_to_parent();

/// Whole contents of a file ("" when missing).
std::string read_file(const std::string& path);

}  // namespace retools::test
