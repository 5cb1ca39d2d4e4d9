// Cache key names, Python str() rendering and codecs: no server round trip.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/codec.hpp>
#include <retools/detail/python_str.hpp>

#include "../support/expect.hpp"
#include "cache/keys.hpp"
#include "util/clock.hpp"

using retools::detail::python_joined;
using retools::detail::python_str;

namespace {

struct Money {
    long cents;
};

}  // namespace

template <>
struct fmt::formatter<Money> : fmt::formatter<std::string_view> {
    auto format(const Money& m, format_context& ctx) const {
        return fmt::format_to(ctx.out(), "{}.{:02}", m.cents / 100, m.cents % 100);
    }
};

namespace {

struct Point {
    int x = 0;
    int y = 0;
    friend bool operator==(const Point&, const Point&) = default;
};
void to_json(nlohmann::json& j, const Point& p) {
    j = {{"x", p.x}, {"y", p.y}};
}
void from_json(const nlohmann::json& j, Point& p) {
    j.at("x").get_to(p.x);
    j.at("y").get_to(p.y);
}

}  // namespace

// ---- CacheKey: the original's key names ----

TEST(CacheKey, BuildsTheOriginalsFiveNames) {
    retools::CacheKey k{"home", "my_func", "1 2 3", "2004-02-02"};
    EXPECT_EQ(k.redis_hit_key, "retools:hits:2004-02-02:home:my_func:1 2 3");
    EXPECT_EQ(k.redis_miss_key, "retools:misses:2004-02-02:home:my_func:1 2 3");
    EXPECT_EQ(k.redis_key, "retools:home:my_func:1 2 3");
    EXPECT_EQ(k.lock_key, "retools:lock:home:my_func:1 2 3");
    EXPECT_EQ(k.redis_keyset, "retools:home:my_func:keys");
}

TEST(CacheKey, DefaultsToTodaysLocalDate) {
    retools::CacheKey k{"r", "ns", ""};
    const std::string today = retools::detail::local_date();
    EXPECT_EQ(k.redis_hit_key, "retools:hits:" + today + ":r:ns:");
    EXPECT_EQ(retools::detail::today(), today);
    ASSERT_EQ(today.size(), 10u);
    EXPECT_EQ(today[4], '-');
    EXPECT_EQ(today[7], '-');
}

TEST(CacheKey, RegionAndNamespaceSets) {
    EXPECT_EQ(retools::detail::cache_keys::regions, "retools:regions");
    EXPECT_EQ(retools::detail::cache_keys::namespaces("short_term"), "retools:short_term:namespaces");
}

// ---- Python str() of arguments ----

TEST(PythonStr, StringsAsIs) {
    EXPECT_EQ(python_str("bunny"), "bunny");
    EXPECT_EQ(python_str(std::string("with space")), "with space");
    EXPECT_EQ(python_str(std::string_view("")), "");
    EXPECT_EQ(python_str('x'), "x");
    EXPECT_EQ(python_str("h\xc3\xa9llo"), "h\xc3\xa9llo");
}

TEST(PythonStr, IntegersInDecimal) {
    EXPECT_EQ(python_str(42), "42");
    EXPECT_EQ(python_str(-7), "-7");
    EXPECT_EQ(python_str(0u), "0");
    EXPECT_EQ(python_str(std::numeric_limits<std::int64_t>::min()), "-9223372036854775808");
    EXPECT_EQ(python_str(std::numeric_limits<std::uint64_t>::max()), "18446744073709551615");
    EXPECT_EQ(python_str(std::int8_t{-5}), "-5");  // int8_t is a number, not a character
    EXPECT_EQ(python_str(std::uint8_t{200}), "200");
    EXPECT_EQ(python_str(short{12}), "12");
}

TEST(PythonStr, BoolsAndNone) {
    EXPECT_EQ(python_str(true), "True");
    EXPECT_EQ(python_str(false), "False");
    EXPECT_EQ(python_str(nullptr), "None");
    EXPECT_EQ(python_str(std::nullopt), "None");
    EXPECT_EQ(python_str(std::optional<int>{}), "None");
    EXPECT_EQ(python_str(std::optional<int>{3}), "3");
    EXPECT_EQ(python_str(std::optional<std::string>{"x"}), "x");
}

TEST(PythonStr, FloatsAsPythonRepr) {
    // Expected strings are what Python 3 prints for str(<the same double>).
    EXPECT_EQ(python_str(1.0), "1.0");
    EXPECT_EQ(python_str(0.1), "0.1");
    EXPECT_EQ(python_str(0.1 + 0.2), "0.30000000000000004");
    EXPECT_EQ(python_str(1e16), "1e+16");
    EXPECT_EQ(python_str(1e15), "1000000000000000.0");
    EXPECT_EQ(python_str(123456789.0), "123456789.0");
    EXPECT_EQ(python_str(1e-5), "1e-05");
    EXPECT_EQ(python_str(0.0001), "0.0001");
    EXPECT_EQ(python_str(1.5e300), "1.5e+300");
    EXPECT_EQ(python_str(-2.5), "-2.5");
    EXPECT_EQ(python_str(-0.0), "-0.0");
    EXPECT_EQ(python_str(std::numeric_limits<double>::infinity()), "inf");
    EXPECT_EQ(python_str(-std::numeric_limits<double>::infinity()), "-inf");
    EXPECT_EQ(python_str(std::nan("")), "nan");
    EXPECT_EQ(python_str(2.5L), "2.5");
    // float: the shortest decimal of the float, as Python prints that literal.
    EXPECT_EQ(python_str(0.1f), "0.1");
    EXPECT_EQ(python_str(3.0f), "3.0");
    EXPECT_EQ(python_str(1e16f), "1e+16");
}

TEST(PythonStr, ListsAndTuplesUseReprOfElements) {
    EXPECT_EQ(python_str(std::vector<int>{1, 2, 3}), "[1, 2, 3]");
    EXPECT_EQ(python_str(std::vector<int>{}), "[]");
    EXPECT_EQ(python_str(std::vector<std::string>{"a", "b"}), "['a', 'b']");
    EXPECT_EQ(python_str(std::list<double>{1.0, 0.5}), "[1.0, 0.5]");
    EXPECT_EQ(python_str(std::set<int>{3, 1}), "{1, 3}");
    EXPECT_EQ(python_str(std::set<int>{}), "set()");
    EXPECT_EQ(python_str(std::vector<std::optional<bool>>{true, std::nullopt}), "[True, None]");
    EXPECT_EQ(python_str(std::vector<std::vector<int>>{{1, 2}, {}}), "[[1, 2], []]");
    EXPECT_EQ(python_str(std::make_tuple(1, std::string("a"))), "(1, 'a')");
    EXPECT_EQ(python_str(std::make_tuple(1)), "(1,)");
    EXPECT_EQ(python_str(std::tuple<>{}), "()");
    EXPECT_EQ(python_str(std::make_pair(1, 2.5)), "(1, 2.5)");
}

TEST(PythonStr, StringReprQuotingAndEscapes) {
    using V = std::vector<std::string>;
    EXPECT_EQ(python_str(V{"it's"}), "[\"it's\"]");
    EXPECT_EQ(python_str(V{"say \"hi\""}), "['say \"hi\"']");
    EXPECT_EQ(python_str(V{"a'b\"c"}), "['a\\'b\"c']");
    EXPECT_EQ(python_str(V{"x\ny\tz\r"}), "['x\\ny\\tz\\r']");
    EXPECT_EQ(python_str(V{"back\\slash"}), "['back\\\\slash']");
    EXPECT_EQ(python_str(V{std::string("\x01\x7f", 2)}), "['\\x01\\x7f']");
    EXPECT_EQ(python_str(V{"h\xc3\xa9llo"}), "['h\xc3\xa9llo']");
    EXPECT_EQ(python_str(V{"nb\xc2\xa0sp"}), "['nb\\xa0sp']");
    EXPECT_EQ(python_str(std::vector<char>{'a', '\''}), "['a', \"'\"]");
}

TEST(PythonStr, StringReprEscapesWhatPythonDoesNotPrint) {
    using V = std::vector<std::string>;
    EXPECT_EQ(python_str(V{"\u200b"}), "['\\u200b']");                // zero width space (Cf)
    EXPECT_EQ(python_str(V{"a\u200db"}), "['a\\u200db']");            // zero width joiner
    EXPECT_EQ(python_str(V{"\u2028"}), "['\\u2028']");                // line separator (Zl)
    EXPECT_EQ(python_str(V{"\ufeff"}), "['\\ufeff']");                // byte order mark
    EXPECT_EQ(python_str(V{"\ue000"}), "['\\ue000']");                // private use
    EXPECT_EQ(python_str(V{"\U000f0000"}), "['\\U000f0000']");        // private use, plane 15
    EXPECT_EQ(python_str(V{"\U000e0001"}), "['\\U000e0001']");        // language tag
    EXPECT_EQ(python_str(V{"\xcd\xb8"}), "['\\u0378']");              // unassigned
    EXPECT_EQ(python_str(V{"\U0001f600"}), "['\U0001f600']");         // printable: kept
    EXPECT_EQ(python_str(V{"\xc2\x85"}), "['\\x85']");                // C1 control
    EXPECT_EQ(python_str(V{"\xff"}), "['\\udcff']");                  // not UTF-8
    EXPECT_EQ(python_str(std::optional<std::string>("a'b")), "a'b");  // str() of a str: as is
    EXPECT_EQ(python_str(std::make_tuple(std::optional<std::string>("\u2028"))), "('\\u2028',)");
}

TEST(PythonStr, MapsRenderAsDicts) {
    EXPECT_EQ(python_str(std::map<int, std::string>{{1, "a"}, {2, "b'"}}), "{1: 'a', 2: \"b'\"}");
    EXPECT_EQ(python_str(std::map<std::string, std::vector<int>>{{"k", {1, 2}}}), "{'k': [1, 2]}");
    EXPECT_EQ(python_str(std::map<int, int>{}), "{}");
    EXPECT_EQ(python_joined(std::map<std::string, bool>{{"x", true}}, 1), "{'x': True} 1");
}

TEST(PythonStr, NullCharPointerIsAClearError) {
    const char* null = nullptr;
    EXPECT_THROW_MSG(python_str(null), retools::ConfigurationError, "null const char*");
    EXPECT_THROW_MSG(python_joined(1, null), retools::ConfigurationError, "null const char*");
    char* mutable_null = nullptr;
    EXPECT_THROW(python_str(mutable_null), retools::ConfigurationError);
    EXPECT_EQ(python_str("text"), "text");
}

// Every code point from U+0080 on, inside a list, against Python's own repr().
TEST(PythonStr, ReprMatchesPythonForEveryCodePoint) {
    const char* python = "/usr/bin/python3";
    if (!std::filesystem::exists(python)) GTEST_SKIP() << "no " << python << ": the Python check is skipped";
    std::vector<std::string> all;
    for (std::uint32_t cp = 0x80; cp < 0x110000; ++cp) {
        std::string s;
        if (cp < 0x800) {
            s += static_cast<char>(0xc0 | (cp >> 6));
        } else if (cp < 0x10000) {
            s += static_cast<char>(0xe0 | (cp >> 12));
            s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        } else {
            s += static_cast<char>(0xf0 | (cp >> 18));
            s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
            s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        }
        s += static_cast<char>(0x80 | (cp & 0x3f));
        all.push_back(std::move(s));
    }
    const auto file = std::filesystem::temp_directory_path() / ("retools_repr_" + std::to_string(::getpid()));
    std::ofstream(file, std::ios::binary) << python_str(all);
    const std::string command =
        std::string(python) +
        " -c \"import sys; got = open(sys.argv[1], 'rb').read().decode('utf-8', "
        "'surrogatepass'); want = repr([chr(c) for c in range(0x80, 0x110000)]); "
        "ok = got == want; "
        "ok or print([(a, b) for a, b in zip(got.split(', '), want.split(', ')) if a != b][:5]); "
        "sys.exit(0 if ok else 1)\" " +
        file.string();
    const int status = std::system(command.c_str());
    std::filesystem::remove(file);
    EXPECT_EQ(status, 0);
}

TEST(PythonStr, FmtFormattableTypes) {
    EXPECT_EQ(python_str(Money{1234}), "12.34");
    EXPECT_EQ(python_str(std::vector<Money>{{5}, {100}}), "[0.05, 1.00]");
}

TEST(PythonStr, ArgumentsJoinedBySingleSpaces) {
    EXPECT_EQ(python_joined(), "");
    EXPECT_EQ(python_joined(1, 2, 3), "1 2 3");
    EXPECT_EQ(python_joined("bunny", 10), "bunny 10");
    EXPECT_EQ(python_joined(std::string("a b"), true, 1.0, nullptr), "a b True 1.0 None");
    EXPECT_EQ(python_joined("", ""), " ");
}

TEST(FunctionNamespace, MatchesTheOriginalsFuncNamespace) {
    EXPECT_EQ(retools::function_namespace("myapp.search", "load"), "myapp.search.load.");
    EXPECT_EQ(retools::function_namespace("myapp.search", "load", "load_things"),
              "myapp.search.load.load_things");
    EXPECT_EQ(retools::function_namespace("m", "f", "a", 2, true), "m.f.a 2 True");
}

TEST(CachedFunctionKey, NamespaceArgsAndKeysWithoutAServer) {
    auto f = retools::cache_region("r", "myapp.search.load",
                                   [](const std::string& s, int n) { return s + std::to_string(n); },
                                   {.namespace_args = {"load_things", "v2"}});
    EXPECT_EQ(f.namespace_name(), "myapp.search.load.load_things v2");
    EXPECT_EQ(f.region(), "r");
    EXPECT_EQ(f.key("bunny", 10), "bunny 10");
    auto g = retools::cache_region("r", "ns", [](double x) { return x; });
    EXPECT_EQ(g.namespace_name(), "ns");
    EXPECT_EQ(g.key(1), "1.0");  // converted to the parameter type first, as the call does
}

// ---- Codec ----

template <class T>
T round_trip(const T& value) {
    auto decoded = retools::Codec<T>::decode(retools::Codec<T>::encode(value));
    EXPECT_TRUE(decoded.has_value());
    return decoded.value_or(T{});
}

TEST(Codec, StringsAreRawBytes) {
    std::string binary("a\0b\xff", 4);
    EXPECT_EQ(retools::Codec<std::string>::encode(binary), binary);
    EXPECT_EQ(round_trip(binary), binary);
}

TEST(Codec, ArithmeticAsText) {
    EXPECT_EQ(retools::Codec<int>::encode(-42), "-42");
    EXPECT_EQ(round_trip(-42), -42);
    EXPECT_EQ(round_trip(std::numeric_limits<std::uint64_t>::max()),
              std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(retools::Codec<double>::encode(0.1), "0.1");
    EXPECT_EQ(round_trip(0.1), 0.1);
    EXPECT_EQ(round_trip(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
    EXPECT_TRUE(std::isnan(round_trip(std::nan(""))));
    EXPECT_EQ(retools::Codec<bool>::encode(true), "true");
    EXPECT_EQ(round_trip(false), false);
    EXPECT_FALSE(retools::Codec<int>::decode("12x"));
    EXPECT_FALSE(retools::Codec<int>::decode(""));
    EXPECT_FALSE(retools::Codec<int>::decode("99999999999999999999"));
    EXPECT_FALSE(retools::Codec<double>::decode("S'pickle'\n."));
    EXPECT_FALSE(retools::Codec<bool>::decode("1"));
}

TEST(Codec, JsonForContainersStructsAndOptionals) {
    EXPECT_EQ(retools::Codec<std::vector<int>>::encode({1, 2, 3}), "[1,2,3]");
    EXPECT_EQ(round_trip(std::vector<std::string>{"a", "b"}), (std::vector<std::string>{"a", "b"}));
    std::map<std::string, int> m{{"x", 1}};
    EXPECT_EQ(round_trip(m), m);
    EXPECT_EQ(retools::Codec<Point>::encode({1, 2}), R"({"x":1,"y":2})");
    EXPECT_EQ(round_trip(Point{3, 4}), (Point{3, 4}));
    EXPECT_EQ(retools::Codec<std::optional<int>>::encode(std::nullopt), "null");
    EXPECT_EQ(round_trip(std::optional<int>{7}), std::optional<int>{7});
    auto empty = retools::Codec<std::optional<std::string>>::decode("null");
    ASSERT_TRUE(empty.has_value());
    EXPECT_FALSE(empty->has_value());
    EXPECT_EQ(round_trip(nlohmann::json{{"k", {1, 2}}}), (nlohmann::json{{"k", {1, 2}}}));
}

TEST(Codec, UndecodableBytesAreNullopt) {
    EXPECT_FALSE(retools::Codec<std::vector<int>>::decode("not json{"));
    EXPECT_FALSE(retools::Codec<std::vector<int>>::decode(R"({"x":1})"));  // valid JSON, wrong shape
    EXPECT_FALSE(retools::Codec<Point>::decode("[1,2]"));
    EXPECT_FALSE(retools::Codec<std::optional<int>>::decode("\"text\""));
    EXPECT_FALSE(retools::Codec<Point>::decode("(dp0\nS'x'\np1\nI1\ns."));  // a pickle
}
