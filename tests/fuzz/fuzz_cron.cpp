// libFuzzer target for the periodic jobs' schedule parser: any input either
// parses or throws ConfigurationError naming the expression; a parsed
// schedule's next runs are strictly increasing and due by its own rule.
// Anything else (another exception, a hang, a crash, a sanitizer report) is a bug.
//   ./build/asan/tests/fuzz/fuzz_cron tests/fuzz/corpus/cron
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <retools/errors.hpp>

#include "queue/cron.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > 256) return 0;  // schedules are short; longer inputs only slow the search
    std::string_view text(reinterpret_cast<const char*>(data), size);
    std::optional<retools::detail::CronSchedule> schedule;
    try {
        schedule = retools::detail::CronSchedule::parse(text);
    } catch (const retools::ConfigurationError& e) {
        if (std::string(e.what()).find("schedule") == std::string::npos) std::abort();
        return 0;
    }
    using namespace std::chrono;
    // From a few starting points, including a leap day and the end of a year.
    const system_clock::time_point starts[] = {sys_days{year{2024} / 2 / 29} + 23h + 59min,
                                               sys_days{year{2025} / 12 / 31} + 23h,
                                               sys_days{year{2026} / 6 / 15} + 12h + 34min};
    for (system_clock::time_point t : starts) {
        for (int i = 0; i < 4; ++i) {
            system_clock::time_point next = schedule->next_after(t);
            if (next <= t) std::abort();
            if (next - t > years{11}) std::abort();  // cron: 9 years at most; @every: 10
            t = next;
        }
    }
    return 0;
}
