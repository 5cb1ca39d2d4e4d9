#pragma once
// The `retools` command line: argument parsing and the subcommands.

namespace retools::tools {

/// Runs `retools` with the process's arguments; returns the exit status
/// (0 ok, 1 runtime error, 2 bad arguments).
int run(int argc, char** argv);

}  // namespace retools::tools
