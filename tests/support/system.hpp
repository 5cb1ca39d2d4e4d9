#pragma once
// Facts about this machine that several tests need (one definition, so that
// the unity build can put their files in one translation unit).

#include <unistd.h>

#include <chrono>
#include <string>

namespace retools::test {

/// The Python interpreter the cross-language tests run.
inline constexpr const char* python3 = "/usr/bin/python3";

/// Seconds since the Unix epoch, as Python's time.time().
inline double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// This host's name, as workers record it.
inline std::string host_name() {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return buf;
}

}  // namespace retools::test
