// libFuzzer target for ConnectionOptions::from_url: any input either parses
// or throws ConfigurationError; anything else (another exception, a crash, a
// sanitizer report) is a bug. Nothing of the user info may be echoed in an
// error message.
//   clang++ -std=c++20 -g -fsanitize=fuzzer,address,undefined -Iinclude tests/fuzz/fuzz_url.cpp \
//       libretools.a -lfmt -lhiredis -lssl -lcrypto -lpthread
//   ./a.out tests/fuzz/corpus/url
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

namespace {

// The error message for `url`, or nullopt when it parses.
std::optional<std::string> error_of(std::string_view url) {
    try {
        retools::ConnectionOptions options = retools::ConnectionOptions::from_url(url);
        (void)options.describe();
        return std::nullopt;
    } catch (const retools::ConfigurationError& e) {
        return std::string(e.what());
    }
}

// Letters and digits shifted by one: the same URL structure, another password.
std::string shifted(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'a' && c <= 'z')
            c = c == 'z' ? 'a' : static_cast<char>(c + 1);
        else if (c >= 'A' && c <= 'Z')
            c = c == 'Z' ? 'A' : static_cast<char>(c + 1);
        else if (c >= '0' && c <= '9')
            c = c == '9' ? '0' : static_cast<char>(c + 1);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view url(reinterpret_cast<const char*>(data), size);
    std::optional<std::string> error = error_of(url);
    if (!error) return 0;
    // The user info (after "://", up to the last '@') is echoed when the
    // message follows it: it contains the user info, and with the letters
    // shifted it contains the shifted text instead. Text the rest of the URL
    // or the message's constant part already holds (an unknown query key, the
    // list of supported keys) is not an echo.
    auto start = url.find("://");
    auto at = url.rfind('@');
    if (start == std::string_view::npos || at == std::string_view::npos || at < start + 3) return 0;
    std::string_view userinfo = url.substr(start + 3, at - start - 3);
    std::size_t letters = 0;
    for (char c : userinfo) letters += std::isalnum(static_cast<unsigned char>(c)) ? 1 : 0;
    if (letters < 8 || error->find(userinfo) == std::string::npos) return 0;
    std::string moved = shifted(userinfo);
    std::string rest = std::string(url.substr(0, start + 3)) + '\n' + std::string(url.substr(at));
    if (rest.find(moved) != std::string::npos) return 0;
    std::string other = std::string(url.substr(0, start + 3)) + moved + std::string(url.substr(at));
    std::optional<std::string> other_error = error_of(other);
    if (other_error && other_error->find(moved) != std::string::npos &&
        other_error->find(userinfo) == std::string::npos)
        std::abort();
    return 0;
}
