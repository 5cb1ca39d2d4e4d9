#pragma once
// Reading back the commands of an encoded request (a CommandBuffer's RESP
// text): the error translator names the command that failed, failover decides
// whether a request may be sent again, routing finds its keys.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string_view>
#include <vector>

namespace retools::detail {

/// Calls `fn(args, text)` with the arguments of each command in `resp` (RESP
/// arrays of bulk strings), in order, and the command's own encoded text, all
/// views into `resp`; `fn` returns false to stop early. Returns false when the text is malformed (it never is
/// when a CommandBuffer wrote it).
template <class Fn>
bool for_each_command(std::string_view resp, Fn&& fn) {
    auto number = [&](char marker) -> long long {
        if (resp.empty() || resp.front() != marker) return -1;
        auto end = resp.find("\r\n");
        if (end == std::string_view::npos) return -1;
        long long n = -1;
        std::from_chars(resp.data() + 1, resp.data() + end, n);
        resp.remove_prefix(end + 2);
        return n;
    };
    std::vector<std::string_view> args;
    while (!resp.empty()) {
        const char* begin = resp.data();
        long long count = number('*');
        if (count <= 0) return false;
        args.clear();
        for (long long i = 0; i < count; ++i) {
            long long len = number('$');
            if (len < 0 || resp.size() < static_cast<std::size_t>(len) + 2) return false;
            args.push_back(resp.substr(0, static_cast<std::size_t>(len)));
            resp.remove_prefix(static_cast<std::size_t>(len) + 2);
        }
        const std::string_view text(begin, static_cast<std::size_t>(resp.data() - begin));
        if (!fn(static_cast<const std::vector<std::string_view>&>(args), text)) return true;
    }
    return true;
}

/// ASCII case-insensitive equality (command names).
inline bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::toupper(static_cast<unsigned char>(x)) ==
                      std::toupper(static_cast<unsigned char>(y));
           });
}

}  // namespace retools::detail
