// The pickle codec: golden bytes written by Python 3 (protocols 0, 2, 4, 5)
// and Python 2's cPickle (protocol 0) decode to the right values; what the
// writer emits round-trips here and, when /usr/bin/python3 exists, in Python;
// every refused opcode, truncation, oversized length and deep nesting is a
// miss with a reason.
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <retools/pickle.hpp>

namespace {

using namespace std::literals;
namespace pk = retools::pickle;

struct Golden {
    const char* name;
    int protocol;
    std::string_view bytes;
    const char* repr;  // Python's repr() of the value
};

// Generated with /usr/bin/python3 (3.11): pickle.dumps(value, protocol=p);
// the py2_* rows are what Python 2.7's cPickle.dumps(value) writes (protocol
// 0, the default there), which Python 2 retools stores as a cached value.
constexpr Golden kGolden[] = {
    {"str", 0, "Vabc\np0\n."sv, "'abc'"},
    {"str", 2,
     "\x80\x02X\x03\x00\x00\x00"
     "abcq\x00."sv,
     "'abc'"},
    {"str", 4,
     "\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00\x8c\x03"
     "abc\x94."sv,
     "'abc'"},
    {"str", 5,
     "\x80\x05\x95\x07\x00\x00\x00\x00\x00\x00\x00\x8c\x03"
     "abc\x94."sv,
     "'abc'"},
    {"str_nonascii", 0, "Vh\xe9\\u20ac\\U0001f600\np0\n."sv, "'h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'"},
    {"str_nonascii", 2, "\x80\x02X\n\x00\x00\x00h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80q\x00."sv,
     "'h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'"},
    {"str_nonascii", 4,
     "\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\nh\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x94."sv,
     "'h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'"},
    {"str_nonascii", 5,
     "\x80\x05\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\nh\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x94."sv,
     "'h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'"},
    {"bytes", 0, "c_codecs\nencode\np0\n(Vab\np1\nVlatin1\np2\ntp3\nRp4\n."sv, "b'ab'"},
    {"bytes", 2,
     "\x80\x02"
     "c_codecs\nencode\nq\x00X\x02\x00\x00\x00"
     "abq\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04."sv,
     "b'ab'"},
    {"bytes", 4,
     "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00"
     "C\x02"
     "ab\x94."sv,
     "b'ab'"},
    {"bytes", 5,
     "\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00"
     "C\x02"
     "ab\x94."sv,
     "b'ab'"},
    {"bytes_empty", 0, "c__builtin__\nbytes\np0\n(tRp1\n."sv, "b''"},
    {"bytes_empty", 2,
     "\x80\x02"
     "c__builtin__\nbytes\nq\x00)Rq\x01."sv,
     "b''"},
    {"bytes_empty", 4,
     "\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00"
     "C\x00\x94."sv,
     "b''"},
    {"bytes_empty", 5,
     "\x80\x05\x95\x04\x00\x00\x00\x00\x00\x00\x00"
     "C\x00\x94."sv,
     "b''"},
    {"int", 0, "I42\n."sv, "42"},
    {"int", 2, "\x80\x02K*."sv, "42"},
    {"int", 4, "\x80\x04K*."sv, "42"},
    {"int", 5, "\x80\x05K*."sv, "42"},
    {"neg", 0, "I-5\n."sv, "-5"},
    {"neg", 2, "\x80\x02J\xfb\xff\xff\xff."sv, "-5"},
    {"neg", 4, "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xfb\xff\xff\xff."sv, "-5"},
    {"neg", 5, "\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xfb\xff\xff\xff."sv, "-5"},
    {"int_big", 0, "L1180591620717411303424L\n."sv, "1180591620717411303424"},
    {"int_big", 2, "\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@."sv, "1180591620717411303424"},
    {"int_big", 4, "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@."sv,
     "1180591620717411303424"},
    {"int_big", 5, "\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@."sv,
     "1180591620717411303424"},
    {"int_neg_big", 0, "L-9223372036854775809L\n."sv, "-9223372036854775809"},
    {"int_neg_big", 2, "\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff."sv, "-9223372036854775809"},
    {"int_neg_big", 4,
     "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff."sv,
     "-9223372036854775809"},
    {"int_neg_big", 5,
     "\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff."sv,
     "-9223372036854775809"},
    {"u64max", 0, "L18446744073709551615L\n."sv, "18446744073709551615"},
    {"u64max", 2, "\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00."sv, "18446744073709551615"},
    {"u64max", 4,
     "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00."sv,
     "18446744073709551615"},
    {"u64max", 5,
     "\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00."sv,
     "18446744073709551615"},
    {"int32", 0, "I100000\n."sv, "100000"},
    {"int32", 2, "\x80\x02J\xa0\x86\x01\x00."sv, "100000"},
    {"int32", 4, "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xa0\x86\x01\x00."sv, "100000"},
    {"int32", 5, "\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xa0\x86\x01\x00."sv, "100000"},
    {"i64min", 0, "L-9223372036854775808L\n."sv, "-9223372036854775808"},
    {"i64min", 2, "\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."sv, "-9223372036854775808"},
    {"i64min", 4, "\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."sv,
     "-9223372036854775808"},
    {"i64min", 5, "\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."sv,
     "-9223372036854775808"},
    {"float", 0, "F0.1\n."sv, "0.1"},
    {"float", 2, "\x80\x02G\?\xb9\x99\x99\x99\x99\x99\x9a."sv, "0.1"},
    {"float", 4, "\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00G\?\xb9\x99\x99\x99\x99\x99\x9a."sv, "0.1"},
    {"float", 5, "\x80\x05\x95\n\x00\x00\x00\x00\x00\x00\x00G\?\xb9\x99\x99\x99\x99\x99\x9a."sv, "0.1"},
    {"none", 0, "N."sv, "None"},
    {"none", 2, "\x80\x02N."sv, "None"},
    {"none", 4, "\x80\x04N."sv, "None"},
    {"none", 5, "\x80\x05N."sv, "None"},
    {"true", 0, "I01\n."sv, "True"},
    {"true", 2, "\x80\x02\x88."sv, "True"},
    {"true", 4, "\x80\x04\x88."sv, "True"},
    {"true", 5, "\x80\x05\x88."sv, "True"},
    {"false", 0, "I00\n."sv, "False"},
    {"false", 2, "\x80\x02\x89."sv, "False"},
    {"false", 4, "\x80\x04\x89."sv, "False"},
    {"false", 5, "\x80\x05\x89."sv, "False"},
    {"list", 0, "(lp0\nI1\naVa\np1\na."sv, "[1, 'a']"},
    {"list", 2,
     "\x80\x02]q\x00(K\x01X\x01\x00\x00\x00"
     "aq\x01"
     "e."sv,
     "[1, 'a']"},
    {"list", 4,
     "\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01\x8c\x01"
     "a\x94"
     "e."sv,
     "[1, 'a']"},
    {"list", 5,
     "\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01\x8c\x01"
     "a\x94"
     "e."sv,
     "[1, 'a']"},
    {"dict", 0, "(dp0\nVa\np1\nI1\ns."sv, "{'a': 1}"},
    {"dict", 2,
     "\x80\x02}q\x00X\x01\x00\x00\x00"
     "aq\x01K\x01s."sv,
     "{'a': 1}"},
    {"dict", 4,
     "\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01"
     "a\x94K\x01s."sv,
     "{'a': 1}"},
    {"dict", 5,
     "\x80\x05\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01"
     "a\x94K\x01s."sv,
     "{'a': 1}"},
    {"tuple", 0, "(I1\nI2\ntp0\n."sv, "(1, 2)"},
    {"tuple", 2, "\x80\x02K\x01K\x02\x86q\x00."sv, "(1, 2)"},
    {"tuple", 4, "\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86\x94."sv, "(1, 2)"},
    {"tuple", 5, "\x80\x05\x95\x07\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86\x94."sv, "(1, 2)"},
    {"set", 0, "c__builtin__\nset\np0\n((lp1\nI1\naI2\natp2\nRp3\n."sv, "{1, 2}"},
    {"set", 2,
     "\x80\x02"
     "c__builtin__\nset\nq\x00]q\x01(K\x01K\x02"
     "e\x85q\x02Rq\x03."sv,
     "{1, 2}"},
    {"set", 4, "\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00\x8f\x94(K\x01K\x02\x90."sv, "{1, 2}"},
    {"set", 5, "\x80\x05\x95\x09\x00\x00\x00\x00\x00\x00\x00\x8f\x94(K\x01K\x02\x90."sv, "{1, 2}"},
    {"frozenset", 0, "c__builtin__\nfrozenset\np0\n((lp1\nI3\natp2\nRp3\n."sv, "frozenset({3})"},
    {"frozenset", 2,
     "\x80\x02"
     "c__builtin__\nfrozenset\nq\x00]q\x01K\x03"
     "a\x85q\x02Rq\x03."sv,
     "frozenset({3})"},
    {"frozenset", 4, "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00(K\x03\x91\x94."sv, "frozenset({3})"},
    {"frozenset", 5, "\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00(K\x03\x91\x94."sv, "frozenset({3})"},
    {"empty_tuple", 0, "(t."sv, "()"},
    {"empty_tuple", 2, "\x80\x02)."sv, "()"},
    {"empty_tuple", 4, "\x80\x04)."sv, "()"},
    {"empty_tuple", 5, "\x80\x05)."sv, "()"},
    {"nested", 0, "(dp0\nVk\np1\n(lp2\nF1.5\naNa(I01\nVx\np3\ntp4\nas."sv, "{'k': [1.5, None, (True, 'x')]}"},
    {"nested", 2,
     "\x80\x02}q\x00X\x01\x00\x00\x00kq\x01]q\x02("
     "G\?\xf8\x00\x00\x00\x00\x00\x00N\x88X\x01\x00\x00\x00xq\x03\x86q\x04"
     "es."sv,
     "{'k': [1.5, None, (True, 'x')]}"},
    {"nested", 4,
     "\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01k\x94]\x94("
     "G\?\xf8\x00\x00\x00\x00\x00\x00N\x88\x8c\x01x\x94\x86\x94"
     "es."sv,
     "{'k': [1.5, None, (True, 'x')]}"},
    {"nested", 5,
     "\x80\x05\x95\x1d\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01k\x94]\x94("
     "G\?\xf8\x00\x00\x00\x00\x00\x00N\x88\x8c\x01x\x94\x86\x94"
     "es."sv,
     "{'k': [1.5, None, (True, 'x')]}"},
    {"shared", 0, "(lp0\n(lp1\nI7\naag1\na."sv, "[[7], [7]]"},
    {"shared", 2,
     "\x80\x02]q\x00(]q\x01K\x07"
     "ah\x01"
     "e."sv,
     "[[7], [7]]"},
    {"shared", 4,
     "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94K\x07"
     "ah\x01"
     "e."sv,
     "[[7], [7]]"},
    {"shared", 5,
     "\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94K\x07"
     "ah\x01"
     "e."sv,
     "[[7], [7]]"},
    {"map_sd", 0, "(dp0\nVa\np1\nF0.5\nsVb\np2\nF-2.0\ns."sv, "{'a': 0.5, 'b': -2.0}"},
    {"map_sd", 2,
     "\x80\x02}q\x00(X\x01\x00\x00\x00"
     "aq\x01G\?\xe0\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00"
     "bq\x02G\xc0\x00\x00\x00\x00\x00\x00\x00u."sv,
     "{'a': 0.5, 'b': -2.0}"},
    {"map_sd", 4,
     "\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01"
     "a\x94G\?\xe0\x00\x00\x00\x00\x00\x00\x8c\x01"
     "b\x94G\xc0\x00\x00\x00\x00\x00\x00\x00u."sv,
     "{'a': 0.5, 'b': -2.0}"},
    {"map_sd", 5,
     "\x80\x05\x95\x1f\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01"
     "a\x94G\?\xe0\x00\x00\x00\x00\x00\x00\x8c\x01"
     "b\x94G\xc0\x00\x00\x00\x00\x00\x00\x00u."sv,
     "{'a': 0.5, 'b': -2.0}"},
    {"vec_int", 0, "(lp0\nI1\naI2\naI3\na."sv, "[1, 2, 3]"},
    {"vec_int", 2,
     "\x80\x02]q\x00(K\x01K\x02K\x03"
     "e."sv,
     "[1, 2, 3]"},
    {"vec_int", 4,
     "\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02K\x03"
     "e."sv,
     "[1, 2, 3]"},
    {"vec_int", 5,
     "\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02K\x03"
     "e."sv,
     "[1, 2, 3]"},
    {"quotes", 0, "Vit's \"q\" \\u005c \\u000a\np0\n."sv, "'it\\'s \"q\" \\\\ \\n'"},
    {"quotes", 2, "\x80\x02X\x0c\x00\x00\x00it's \"q\" \\ \nq\x00."sv, "'it\\'s \"q\" \\\\ \\n'"},
    {"quotes", 4, "\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x0cit's \"q\" \\ \n\x94."sv,
     "'it\\'s \"q\" \\\\ \\n'"},
    {"quotes", 5, "\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x0cit's \"q\" \\ \n\x94."sv,
     "'it\\'s \"q\" \\\\ \\n'"},
    {"bytes_hi", 0, "c_codecs\nencode\np0\n(V\\u0000\xff\np1\nVlatin1\np2\ntp3\nRp4\n."sv, "b'\\x00\\xff'"},
    {"bytes_hi", 2,
     "\x80\x02"
     "c_codecs\nencode\nq\x00X\x03\x00\x00\x00\x00\xc3\xbfq\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04."sv,
     "b'\\x00\\xff'"},
    {"bytes_hi", 4,
     "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00"
     "C\x02\x00\xff\x94."sv,
     "b'\\x00\\xff'"},
    {"bytes_hi", 5,
     "\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00"
     "C\x02\x00\xff\x94."sv,
     "b'\\x00\\xff'"},
    {"py2_str", 0, "S'abc'\np1\n."sv, "b'abc'"},
    {"py2_str_utf8", 0, "S'\\xc3\\xa9'\np1\n."sv, "b'\\xc3\\xa9'"},
    {"py2_unicode", 0, "Vabc\np1\n."sv, "'abc'"},
    {"py2_int", 0, "I42\n."sv, "42"},
    {"py2_long", 0, "L1180591620717411303424L\n."sv, "1180591620717411303424"},
    {"py2_float", 0, "F0.1\n."sv, "0.1"},
    {"py2_none", 0, "N."sv, "None"},
    {"py2_true", 0, "I01\n."sv, "True"},
    {"py2_false", 0, "I00\n."sv, "False"},
    {"py2_list", 0, "(lp1\nI1\naS'a'\np2\na."sv, "[1, b'a']"},
    {"py2_dict", 0, "(dp1\nS'a'\np2\nI1\ns."sv, "{b'a': 1}"},
    {"py2_tuple", 0, "(I1\nI2\ntp1\n."sv, "(1, 2)"},
    {"py2_set", 0, "c__builtin__\nset\np1\n((lp2\nI1\naI2\natp3\nRp4\n."sv, "{1, 2}"},
};

TEST(PickleGolden, EveryTypeAndProtocolDecodesToPythonsValue) {
    for (const Golden& g : kGolden) {
        SCOPED_TRACE(std::string(g.name) + " protocol " + std::to_string(g.protocol));
        pk::Decoded d = pk::decode(g.bytes);
        ASSERT_TRUE(d) << d.error;
        EXPECT_EQ(d.value->repr(), g.repr);
        // The writer's bytes read back as the same value.
        pk::Decoded again = pk::decode(pk::encode(*d.value));
        ASSERT_TRUE(again) << again.error;
        EXPECT_EQ(*again.value, *d.value);
    }
}

std::string_view golden(std::string_view name, int protocol) {
    for (const Golden& g : kGolden)
        if (g.name == name && g.protocol == protocol) return g.bytes;
    ADD_FAILURE() << "no golden " << name;
    return {};
}

constexpr int kProtocols[] = {0, 2, 4, 5};

TEST(PickleGolden, TypedReads) {
    for (int p : kProtocols) {
        SCOPED_TRACE(p);
        EXPECT_EQ(pk::loads<std::string>(golden("str", p)), "abc");
        EXPECT_EQ(pk::loads<std::string>(golden("str_nonascii", p)), "h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        EXPECT_EQ(pk::loads<std::string>(golden("quotes", p)), "it's \"q\" \\ \n");
        EXPECT_EQ(pk::loads<std::string>(golden("bytes", p)), "ab");
        EXPECT_EQ(pk::loads<std::string>(golden("bytes_empty", p)), "");
        EXPECT_EQ(pk::loads<std::string>(golden("bytes_hi", p)), "\x00\xff"s);
        EXPECT_EQ(pk::loads<int>(golden("int", p)), 42);
        EXPECT_EQ(pk::loads<long>(golden("neg", p)), -5);
        EXPECT_EQ(pk::loads<long>(golden("int32", p)), 100000);
        EXPECT_EQ(pk::loads<long long>(golden("i64min", p)), std::numeric_limits<long long>::min());
        EXPECT_EQ(pk::loads<unsigned long long>(golden("u64max", p)),
                  std::numeric_limits<unsigned long long>::max());
        EXPECT_EQ(pk::loads<double>(golden("float", p)), 0.1);
        EXPECT_EQ(pk::loads<std::optional<int>>(golden("none", p)),
                  std::optional<std::optional<int>>(std::in_place, std::nullopt));
        EXPECT_EQ(pk::loads<bool>(golden("true", p)), true);
        EXPECT_EQ(pk::loads<bool>(golden("false", p)), false);
        EXPECT_EQ((pk::loads<std::tuple<int, std::string>>(golden("list", p))), std::make_tuple(1, "a"s));
        EXPECT_EQ((pk::loads<std::map<std::string, int>>(golden("dict", p))),
                  (std::map<std::string, int>{{"a", 1}}));
        EXPECT_EQ((pk::loads<std::pair<int, int>>(golden("tuple", p))), std::make_pair(1, 2));
        EXPECT_EQ((pk::loads<std::vector<int>>(golden("tuple", p))), (std::vector<int>{1, 2}));
        EXPECT_EQ((pk::loads<std::set<int>>(golden("set", p))), (std::set<int>{1, 2}));
        EXPECT_EQ((pk::loads<std::set<int>>(golden("frozenset", p))), (std::set<int>{3}));
        EXPECT_EQ((pk::loads<std::vector<int>>(golden("vec_int", p))), (std::vector<int>{1, 2, 3}));
        EXPECT_EQ((pk::loads<std::map<std::string, double>>(golden("map_sd", p))),
                  (std::map<std::string, double>{{"a", 0.5}, {"b", -2.0}}));
        EXPECT_EQ((pk::loads<std::vector<std::vector<int>>>(golden("shared", p))),
                  (std::vector<std::vector<int>>{{7}, {7}}));
        auto nested = pk::loads<nlohmann::json>(golden("nested", p));
        ASSERT_TRUE(nested);
        EXPECT_EQ(*nested, nlohmann::json::parse(R"({"k": [1.5, null, [true, "x"]]})"));
    }
}

TEST(PickleGolden, Python2) {
    EXPECT_EQ(pk::loads<std::string>(golden("py2_str", 0)), "abc");
    EXPECT_EQ(pk::loads<std::string>(golden("py2_str_utf8", 0)), "\xc3\xa9");
    EXPECT_EQ(pk::loads<std::string>(golden("py2_unicode", 0)), "abc");
    EXPECT_EQ(pk::loads<int>(golden("py2_int", 0)), 42);
    EXPECT_EQ(pk::loads<double>(golden("py2_float", 0)), 0.1);
    EXPECT_EQ(pk::loads<bool>(golden("py2_true", 0)), true);
    EXPECT_EQ(pk::loads<std::optional<std::string>>(golden("py2_none", 0)),
              std::optional<std::optional<std::string>>(std::in_place, std::nullopt));
    EXPECT_EQ((pk::loads<std::tuple<int, std::string>>(golden("py2_list", 0))), std::make_tuple(1, "a"s));
    EXPECT_EQ((pk::loads<std::map<std::string, int>>(golden("py2_dict", 0))),
              (std::map<std::string, int>{{"a", 1}}));
    EXPECT_EQ((pk::loads<std::pair<int, int>>(golden("py2_tuple", 0))), std::make_pair(1, 2));
    EXPECT_EQ((pk::loads<std::set<int>>(golden("py2_set", 0))), (std::set<int>{1, 2}));
    std::string why;
    EXPECT_FALSE(pk::loads<long long>(golden("py2_long", 0), &why));
    EXPECT_NE(why.find("out of range"), std::string::npos) << why;
    // Python 2 unicode escapes: \u and \U, Latin-1 bytes, surrogate pairs, and \\u (not an escape).
    EXPECT_EQ(pk::loads<std::string>("V\\u20ac\xe9\\U0001f600\\ud83d\\ude00\\\\u0041\n."sv),
              "\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80\xf0\x9f\x98\x80\\\\u0041");
    EXPECT_EQ(pk::loads<std::string>("S'a\\'b\\n\\x41\\101\\\\'\n."sv), "a'b\nAA\\");
    EXPECT_EQ(pk::loads<std::string>("S\"it's\"\n."sv), "it's");
    EXPECT_EQ(pk::loads<std::string>("U\x03"
                                     "abc."sv),
              "abc");
    EXPECT_EQ(pk::loads<std::string>("T\x02\x00\x00\x00"
                                     "ab."sv),
              "ab");
}

TEST(PickleRead, IntsThatDoNotFitAreAMissWithAReason) {
    std::string why;
    EXPECT_FALSE(pk::loads<int>("\x80\x02\x8a\x05\x00\x00\x00\x00\x01."sv, &why));  // 2**32
    EXPECT_NE(why.find("out of range"), std::string::npos) << why;
    EXPECT_FALSE(pk::loads<unsigned>("I-1\n."sv, &why));
    EXPECT_FALSE(pk::loads<std::int8_t>("I128\n."sv, &why));
    EXPECT_EQ(pk::loads<std::int8_t>("I-128\n."sv), std::int8_t{-128});
    EXPECT_FALSE(pk::loads<std::string>("I1\n."sv, &why));
    EXPECT_EQ(why, "expected str, got int");
    EXPECT_FALSE(pk::loads<bool>("I1\n."sv, &why));
    EXPECT_FALSE((pk::loads<std::pair<int, int>>("(I1\nt."sv, &why)));
    EXPECT_NE(why.find("tuple of 2"), std::string::npos) << why;
    EXPECT_FALSE((pk::loads<std::map<std::string, int>>("(dI1\nI2\ns."sv, &why)));
    EXPECT_FALSE(pk::loads<nlohmann::json>(golden("int_big", 2), &why));
    EXPECT_NE(why.find("64 bits"), std::string::npos) << why;
}

TEST(PickleRead, RedundantAndEdgeEncodings) {
    EXPECT_EQ(pk::loads<long>("\x80\x02\x8a\x00."sv), 0);
    EXPECT_EQ(pk::loads<long>("\x80\x02\x8a\x01\xff."sv), -1);
    EXPECT_EQ(pk::loads<long>("\x80\x02\x8a\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff."sv), -1);
    EXPECT_EQ(pk::loads<long>("L-0L\n."sv), 0);
    EXPECT_EQ(pk::loads<long>("L+12\n."sv), 12);
    EXPECT_TRUE(std::isinf(*pk::loads<double>("Finf\n."sv)));
    EXPECT_TRUE(std::isnan(*pk::loads<double>("Fnan\n."sv)));
    EXPECT_EQ(pk::loads<double>("F1e+16\n."sv), 1e16);
    EXPECT_EQ(pk::loads<double>("I3\n."sv), 3.0);  // an int where a float is expected
    // POP, POP_MARK, DUP, memo by PUT/GET and LONG_BINPUT/LONG_BINGET.
    EXPECT_EQ(pk::loads<int>("I1\nI2\n0."sv), 1);
    EXPECT_EQ(pk::loads<int>("I1\n(I2\nI3\n1."sv), 1);
    EXPECT_EQ((pk::loads<std::vector<int>>("(lI1\na2a."sv)),
              std::nullopt);  // DUP then APPEND a list to itself
    EXPECT_EQ((pk::loads<std::vector<int>>("\x80\x02]r\x07\x00\x00\x00K\x05"
                                           "aj\x07\x00\x00\x00"
                                           "0."sv)),
              (std::vector<int>{5}));
    // A container shared twice is copied; a list containing itself is refused.
    std::string why;
    EXPECT_FALSE(pk::decode("\x80\x02]q\x00h\x00\x61."sv).value);
    EXPECT_NE(pk::decode("\x80\x02]q\x00h\x00\x61."sv).error.find("contains itself"), std::string::npos);
}

TEST(PickleRefuse, EveryOpcodeThatImportsOrCalls) {
    struct Case {
        std::string_view bytes;
        const char* reason;
    };
    const Case cases[] = {
        {"cos\nsystem\n(S'echo hi'\ntR."sv, "refused global os.system"},
        {"cposix\nsystem\np0\n."sv, "refused global posix.system"},
        {"\x80\x04\x8c\x02os\x8c\x06system\x93."sv, "refused global os.system"},
        {"\x80\x04K\x01K\x02\x93."sv, "STACK_GLOBAL"},
        {"\x80\x02]K\x01\x85R."sv, "REDUCE"},
        {"(dp0\nb."sv, "BUILD"},
        {"(S'x'\nios\nsystem\n."sv, "INST"},
        {"(I1\no."sv, "OBJ"},
        {"\x80\x02N)\x81."sv, "NEWOBJ"},
        {"\x80\x04N)}\x92."sv, "NEWOBJ_EX"},
        {"Pid\n."sv, "PERSID"},
        {"\x80\x02K\x01Q."sv, "BINPERSID"},
        {"\x80\x02\x82\x01."sv, "EXT1"},
        {"\x80\x02\x83\x01\x00."sv, "EXT2"},
        {"\x80\x02\x84\x01\x00\x00\x00."sv, "EXT4"},
        {"\x80\x05\x97."sv, "NEXT_BUFFER"},
        {"\x80\x05\x98."sv, "READONLY_BUFFER"},
        // Whitelisted globals only as REDUCE callables with plain arguments.
        {"c__builtin__\nset\n."sv, "a global used as a value"},
        {"c__builtin__\nbytes\n(S'x'\ntR."sv, "bytes() with arguments"},
        {"c_codecs\nencode\n(Vab\nVrot13\ntR."sv, "only latin1"},
        {"c_codecs\nencode\n(V\\u20ac\nVlatin1\ntR."sv, "not Latin-1"},
        {"c__builtin__\nset\n(I1\ntR."sv, "set() of something other"},
        {"c__builtin__\nset\nc__builtin__\nset\n\x85R."sv, "set() of something other"},
        {"c__builtin__\nset\nI1\nR."sv, "not a tuple"},
        {"cbuiltins\neval\n."sv, "refused global builtins.eval"},
        {"\x80\x06N."sv, "unsupported protocol 6"},
        {"\xff."sv, "unknown opcode 0xff"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(std::string(c.bytes));
        pk::Decoded d = pk::decode(c.bytes);
        EXPECT_FALSE(d);
        EXPECT_NE(d.error.find(c.reason), std::string::npos) << d.error;
    }
}

TEST(PickleRefuse, TruncatedInputAtEveryLength) {
    for (const Golden& g : kGolden) {
        for (std::size_t n = 0; n < g.bytes.size(); ++n) {
            pk::Decoded d = pk::decode(g.bytes.substr(0, n));
            EXPECT_FALSE(d) << g.name << " cut at " << n;
            EXPECT_FALSE(d.error.empty());
        }
    }
    EXPECT_NE(pk::decode("N.x"sv).error.find("1 bytes after STOP"), std::string::npos);
    EXPECT_NE(pk::decode(""sv).error.find("no STOP"), std::string::npos);
    EXPECT_NE(pk::decode("."sv).error.find("stack underflow"), std::string::npos);
}

TEST(PickleRefuse, OversizedLengths) {
    const std::string_view cases[] = {
        "\x80\x02X\xff\xff\xff\xff."sv,                     // BINUNICODE of 4 GiB
        "\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff."sv,  // BINUNICODE8
        "\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80."sv,  // BINBYTES8
        "\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\x7f."sv,  // BYTEARRAY8
        "\x80\x02T\xff\xff\xff\xff."sv,                     // negative BINSTRING
        "\x80\x02\x8b\xff\xff\xff\x7f."sv,                  // LONG4 of 2 GiB
        "\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff."sv,  // FRAME
        "\x80\x02r\xff\xff\xff\x7f."sv,                     // LONG_BINPUT far away
    };
    for (auto c : cases) {
        pk::Decoded d = pk::decode(c);
        EXPECT_FALSE(d);
        EXPECT_FALSE(d.error.empty());
    }
    // Limits bound what the memo could multiply.
    std::string bomb = "\x80\x02]q\x00"s;  // a list ...
    for (int i = 0; i < 30; ++i)
        bomb +=
            "](h\x00h\x00"
            "eq\x00"s;  // ... in a list twice, 30 times over
    bomb += ".";
    pk::Decoded d = pk::decode(bomb, {.max_values = 100000});
    EXPECT_FALSE(d);
    EXPECT_NE(d.error.find("more than"), std::string::npos) << d.error;
    std::string text = "\x80\x02X\x00\x00\x04\x00"s + std::string(1 << 18, 'x') + "q\x00("s;
    for (int i = 0; i < 20; ++i) text += "h\x00"s;
    text += "l.";
    d = pk::decode(text, {.max_bytes = 1 << 20});
    EXPECT_FALSE(d);
    EXPECT_NE(d.error.find("bytes of text"), std::string::npos) << d.error;
}

TEST(PickleRefuse, DeepNesting) {
    std::string deep = "\x80\x02";
    for (int i = 0; i < 100000; ++i) deep += ']';
    for (int i = 0; i < 99999; ++i) deep += 'a';
    deep += '.';
    pk::Decoded d = pk::decode(deep);
    EXPECT_FALSE(d);
    EXPECT_NE(d.error.find("nested deeper than 200"), std::string::npos) << d.error;
    std::string ok = "\x80\x02";
    for (int i = 0; i < 150; ++i) ok += ']';
    for (int i = 0; i < 149; ++i) ok += 'a';
    ok += '.';
    EXPECT_TRUE(pk::decode(ok));
    std::string marks(2000, '(');
    EXPECT_NE(pk::decode(marks + "N.", {.max_values = 1000}).error.find("too many MARKs"), std::string::npos);
}

TEST(PickleWrite, Protocol2DataOpcodes) {
    EXPECT_EQ(pk::dumps("abc"s),
              "\x80\x02X\x03\x00\x00\x00"
              "abc."s);
    EXPECT_EQ(pk::dumps(42), "\x80\x02K*."s);
    EXPECT_EQ(pk::dumps(-5), "\x80\x02J\xfb\xff\xff\xff."s);
    EXPECT_EQ(pk::dumps(0.1), "\x80\x02G?\xb9\x99\x99\x99\x99\x99\x9a."s);
    EXPECT_EQ(pk::dumps(true), "\x80\x02\x88."s);
    EXPECT_EQ(pk::dumps(nullptr), "\x80\x02N."s);
    EXPECT_EQ(pk::dumps(std::optional<int>{}), "\x80\x02N."s);
    EXPECT_EQ(pk::dumps(std::numeric_limits<unsigned long long>::max()),
              "\x80\x02\x8a\t\xff\xff\xff\xff\xff\xff\xff\xff\x00."s);
    EXPECT_EQ(pk::dumps(std::numeric_limits<long long>::min()),
              "\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."s);
    // Bytes that are not UTF-8 become bytes (_codecs.encode, as Python writes them).
    EXPECT_EQ(pk::dumps("\xff"s),
              "\x80\x02"
              "c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1\x86R."s);
    EXPECT_EQ(pk::loads<std::string>(pk::dumps("\xff\x00\xc3"s)), "\xff\x00\xc3"s);
    // Whatever a string holds, it stays data: a pickle inside a str is just text.
    const std::string evil = "cos\nsystem\n(S'echo pwned'\ntR.";
    EXPECT_EQ(pk::loads<std::string>(pk::dumps(evil)), evil);
}

struct Point {
    int x = 0;
    std::string label;
    friend bool operator==(const Point&, const Point&) = default;
};
void to_json(nlohmann::json& j, const Point& p) {
    j = {{"x", p.x}, {"label", p.label}};
}
void from_json(const nlohmann::json& j, Point& p) {
    j.at("x").get_to(p.x);
    j.at("label").get_to(p.label);
}

template <class T>
void round_trip(const T& value) {
    std::string why;
    auto back = pk::loads<T>(pk::dumps(value), &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(*back, value);
}

TEST(PickleWrite, RoundTripsEveryMappedType) {
    round_trip("h\xc3\xa9llo"s);
    round_trip(std::string());
    round_trip('c');
    round_trip(std::int8_t{-7});
    round_trip(std::uint16_t{65535});
    round_trip(std::int32_t{-2147483647 - 1});
    round_trip(std::int64_t{1} << 40);
    round_trip(2.5f);
    round_trip(-0.0);
    round_trip(false);
    round_trip(std::optional<std::string>("x"));
    round_trip(std::optional<std::string>());
    round_trip(std::vector<std::string>{"a", "", "\xfe"});
    round_trip(std::list<double>{1.5, -2});
    round_trip(std::deque<bool>{true, false});
    round_trip(std::array<int, 3>{1, 2, 3});
    round_trip(std::map<int, std::string>{{1, "a"}, {-2, "b"}});
    round_trip(std::unordered_map<std::string, std::vector<int>>{{"k", {1}}});
    round_trip(std::set<std::string>{"x", "y"});
    round_trip(std::set<int>{});
    round_trip(std::make_tuple(1, "two"s, 3.0, std::optional<int>()));
    round_trip(std::make_pair("k"s, std::vector<int>{}));
    round_trip(Point{3, "p"});
    round_trip(std::vector<Point>{{1, "a"}, {2, "b"}});
    nlohmann::json j =
        nlohmann::json::parse(R"({"a": [1, 2.5, "s", null, true, {"b": []}], "u": 18446744073709551615})");
    round_trip(j);
    // NaN inside a container and non-UTF-8 text inside JSON survive (JSON text could hold neither).
    auto nan = pk::loads<std::vector<double>>(pk::dumps(std::vector<double>{NAN, 1}));
    ASSERT_TRUE(nan);
    EXPECT_TRUE(std::isnan((*nan)[0]));
    round_trip(nlohmann::json{{"bad", "\xff\xfe"}});
    round_trip(pk::Value::big_integer("-123456789012345678901234567890"));
}

TEST(PickleValue, ReprLikePython) {
    EXPECT_EQ(pk::decode("\x80\x02(K\x01t."sv).value->repr(), "(1,)");
    EXPECT_EQ(pk::Value::set().repr(), "set()");
    EXPECT_EQ(pk::Value::bytes("a'\x01").repr(), "b\"a'\\x01\"");
}

// What the writer emits reads back in Python as the same value.
TEST(PickleWrite, PythonReadsWhatCppWrites) {
    const char* python = "/usr/bin/python3";
    if (!std::filesystem::exists(python)) GTEST_SKIP() << "no " << python << ": the Python check is skipped";
    struct Case {
        std::string pickle;
        const char* expected;  // a Python expression
    };
    const Case cases[] = {
        {pk::dumps("abc"s), "'abc'"},
        {pk::dumps("h\xc3\xa9\xe2\x82\xac"s), "'h\\u00e9\\u20ac'"},
        {pk::dumps("\xff\x00"s), "b'\\xff\\x00'"},
        {pk::dumps(std::string()), "''"},
        {pk::dumps(42L), "42"},
        {pk::dumps(-100000L), "-100000"},
        {pk::dumps(std::numeric_limits<long long>::min()), "-2**63"},
        {pk::dumps(std::numeric_limits<unsigned long long>::max()), "2**64-1"},
        {pk::dumps(0.1), "0.1"},
        {pk::dumps(std::vector<double>{NAN}), "[float('nan')]"},
        {pk::dumps(true), "True"},
        {pk::dumps(nullptr), "None"},
        {pk::dumps(std::vector<int>{1, 2, 3}), "[1, 2, 3]"},
        {pk::dumps(std::vector<int>{}), "[]"},
        {pk::dumps(std::map<std::string, double>{{"a", 0.5}}), "{'a': 0.5}"},
        {pk::dumps(std::map<int, std::string>{{1, "x"}}), "{1: 'x'}"},
        {pk::dumps(std::set<int>{1, 2}), "{1, 2}"},
        {pk::dumps(std::make_tuple(1, "a"s)), "(1, 'a')"},
        {pk::dumps(std::make_tuple()), "()"},
        {pk::dumps(Point{1, "p"}), "{'x': 1, 'label': 'p'}"},
        {pk::dumps(pk::Value::frozenset({pk::Value::integer(3)})), "frozenset({3})"},
        {pk::dumps(pk::Value::big_integer("-1180591620717411303424")), "-2**70"},
        {pk::dumps("cos\nsystem\n(S'echo pwned'\ntR."s), "'cos\\nsystem\\n(S\\'echo pwned\\'\\ntR.'"},
    };
    const auto dir =
        std::filesystem::temp_directory_path() / ("retools_pickle_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string script = "import pickle, math, sys\nok = True\n";
    for (std::size_t i = 0; i < std::size(cases); ++i) {
        const auto file = dir / (std::to_string(i) + ".pickle");
        std::ofstream(file, std::ios::binary) << cases[i].pickle;
        script += "v = pickle.loads(open('" + file.string() + "', 'rb').read())\n";
        script += "e = " + std::string(cases[i].expected) + "\n";
        script +=
            "same = (v == e or (isinstance(v, list) and len(v) == 1 and isinstance(v[0], float) and "
            "math.isnan(v[0]))) and type(v) is type(e)\n";
        script += "if not same: ok = False; print('case " + std::to_string(i) +
                  ": got', repr(v), 'expected', repr(e))\n";
    }
    script += "sys.exit(0 if ok else 1)\n";
    const auto script_file = dir / "check.py";
    std::ofstream(script_file) << script;
    const std::string command = std::string(python) + " " + script_file.string() + " 2>&1";
    std::string output;
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe)) output += buf;
    const int status = ::pclose(pipe);
    std::filesystem::remove_all(dir);
    EXPECT_EQ(status, 0) << output;
}

}  // namespace
