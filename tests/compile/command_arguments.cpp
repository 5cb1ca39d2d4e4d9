// Compiled (syntax only), never run, by the api.* tests in tests/CMakeLists.txt:
// as is it must compile; with RETOOLS_NULLPTR_ARGUMENT defined it must not,
// and only because of the nullptr (the one line that differs).

#include <string>
#include <vector>

#include <retools/connection.hpp>

void send(const retools::Connection& conn) {
    const std::string key = "key";
    conn.command("SET", key, "");
    conn.command("SADD", key, std::vector<std::string>{"a", "b"}, 42, 1.5);
    retools::Pipeline pipeline;
    pipeline.command("GET", key);
#ifdef RETOOLS_NULLPTR_ARGUMENT
    conn.command("SET", key, nullptr);
#endif
}
