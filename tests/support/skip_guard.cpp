#include "skip_guard.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace retools::test {
namespace {

std::vector<std::string> g_skipped;

class SkipRecorder : public ::testing::EmptyTestEventListener {
    void OnTestEnd(const ::testing::TestInfo& info) override {
        if (info.result() && info.result()->Skipped())
            g_skipped.push_back(std::string(info.test_suite_name()) + "." + info.name());
    }
};

bool skipping_forbidden() {
    auto is = [](const char* name, std::string_view value) {
        const char* v = std::getenv(name);
        return v && value == v;
    };
    return is("RETOOLS_NO_SKIP", "1") || is("CI", "true");
}

}  // namespace

void install_skip_guard() {
    ::testing::UnitTest::GetInstance()->listeners().Append(new SkipRecorder);
}

int finish_run(int result) {
    if (g_skipped.empty() || !skipping_forbidden()) return result;
    std::fprintf(stderr, "%zu test(s) skipped, which CI forbids (RETOOLS_NO_SKIP=1 or CI=true):\n",
                 g_skipped.size());
    for (const auto& name : g_skipped) std::fprintf(stderr, "  SKIPPED %s\n", name.c_str());
    return 1;
}

}  // namespace retools::test
