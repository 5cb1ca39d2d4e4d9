// The RESP reader a Link uses: hiredis' reader with a budget of array
// elements per reply, so a server that declares a huge array gets a
// protocol error instead of making the client reserve gigabytes.
#include <hiredis/hiredis.h>

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "client/reply_reader.hpp"

namespace {

using namespace retools::detail;

struct Reader {
    Reader() : r(create_reply_reader()) {}
    ~Reader() { free_reply_reader(r); }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    void feed(std::string_view bytes) { ASSERT_EQ(redisReaderFeed(r, bytes.data(), bytes.size()), REDIS_OK); }
    // The next reply's element count (-1: none yet), or throws the reader's error.
    long long next() {
        void* raw = nullptr;
        if (next_reply(r, &raw) != REDIS_OK) throw std::runtime_error(reply_reader_error(r));
        if (raw == nullptr) return -1;
        auto* reply = static_cast<redisReply*>(raw);
        const long long n = static_cast<long long>(reply->elements);
        freeReplyObject(reply);
        return n;
    }
    redisReader* r;
};

}  // namespace

TEST(ReplyReader, ReadsArraysAsHiredisDoes) {
    Reader reader;
    reader.feed("*3\r\n:1\r\n$3\r\nabc\r\n*1\r\n+OK\r\n");
    EXPECT_EQ(reader.next(), 3);
    reader.feed("*0\r\n");
    EXPECT_EQ(reader.next(), 0);
    EXPECT_EQ(reader.next(), -1);
}

TEST(ReplyReader, AnArrayHeaderOverTheBudgetIsAProtocolErrorNamingTheLimit) {
    Reader reader;
    reader.feed("*777777777\r\n");  // hiredis alone would calloc 6 GB here
    try {
        reader.next();
        FAIL() << "no error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find(std::to_string(kMaxReplyElements)), std::string::npos) << e.what();
    }
}

TEST(ReplyReader, NestedArraysShareOneBudgetAndEachReplyStartsAfresh) {
    // Two arrays of half the budget and one more element: over it, together.
    const long long half = kMaxReplyElements / 2;
    {
        Reader reader;
        reader.feed("*2\r\n*" + std::to_string(half) + "\r\n");
        EXPECT_EQ(reader.next(), -1);  // within budget: waits for the elements
    }
    Reader reader;
    // Complete replies each far below the budget, many times over it in total.
    for (int i = 0; i < 200; ++i) {
        reader.feed("*3\r\n:1\r\n:2\r\n:3\r\n");
        ASSERT_EQ(reader.next(), 3);
    }
    reader.feed("*2\r\n*1\r\n:1\r\n*" + std::to_string(kMaxReplyElements) + "\r\n");
    EXPECT_THROW(reader.next(), std::runtime_error);
}
