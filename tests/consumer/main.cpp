// A downstream program: compiles against the installed or embedded retools.
#include <retools/retools.hpp>

int main() {
    auto options = retools::ConnectionOptions::from_url("redis://127.0.0.1:6379/0");
    return options.port == 6379 ? 0 : 1;
}
