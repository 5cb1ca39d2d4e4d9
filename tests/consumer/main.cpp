// A downstream program: compiles against the installed or embedded retools.
#include <retools/retools.hpp>

int main() {
    auto options = retools::ConnectionOptions::from_url("redis://127.0.0.1:6379/0");
    retools::set_log_handler([](retools::LogLevel, std::string_view) {});
    retools::set_log_handler({});
    return options.port == 6379 && retools::to_string(retools::LogLevel::info) == "info" ? 0 : 1;
}
