// libFuzzer target: bytes as a job payload (Job::from_payload, then writing it
// back) and as a retools:failed entry (FailedJob::from_json, then to_json).
// Only retools::Error may come out: anything else, a crash or a stack
// overflow on deep nesting is a bug.
//
//   clang++ -std=c++20 -g -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
//     tests/fuzz/fuzz_payload.cpp <retools sources or library> -o fuzz_payload
//   ./fuzz_payload tests/fuzz/corpus/payload

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <retools/errors.hpp>
#include <retools/job.hpp>
#include <retools/queue.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    // A Connection that is never used: parsing needs no server.
    static const retools::Connection unused{"redis://127.0.0.1:1/0"};
    try {
        retools::Job job = retools::Job::from_payload(bytes, "main", unused);
        (void)job.to_json();
        (void)job.to_dict();
    } catch (const retools::Error&) {}
    try {
        retools::FailedJob failed = retools::FailedJob::from_json(bytes);
        retools::FailedJob again = retools::FailedJob::from_json(failed.to_json());
        if (again.payload != failed.payload) __builtin_trap();  // byte-exact round trip
    } catch (const retools::Error&) {}
    // Any bytes as a failed job's payload survive the entry byte-exact.
    retools::FailedJob f;
    f.payload = std::string(bytes);
    f.queue = "main";
    if (retools::FailedJob::from_json(f.to_json()).payload != f.payload) __builtin_trap();
    return 0;
}
