// retools: see and steer queues, workers, failed and scheduled jobs and cache
// statistics from the command line or a web dashboard. `retools --help`.
#include "cli.hpp"

int main(int argc, char** argv) {
    return retools::tools::run(argc, argv);
}
