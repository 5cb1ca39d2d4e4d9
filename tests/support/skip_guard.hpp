#pragma once
// Under CI a skipped test is a failure: a missing tool (python3, chromium,
// `script`...) must not let the run pass without the check it guards.

#include <gtest/gtest.h>

namespace retools::test {

/// Records skipped tests; call before RUN_ALL_TESTS().
void install_skip_guard();

/// RUN_ALL_TESTS()'s result, turned into a failure (and the skipped tests
/// listed) when a test skipped and RETOOLS_NO_SKIP=1 or CI=true.
int finish_run(int result);

}  // namespace retools::test
