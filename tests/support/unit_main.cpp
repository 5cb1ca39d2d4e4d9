// main() of the unit binary: no server is started.
#include <gtest/gtest.h>

#include "skip_guard.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    retools::test::install_skip_guard();
    return retools::test::finish_run(RUN_ALL_TESTS());
}
