#include "client/reply_reader.hpp"

#include <hiredis/hiredis.h>

#include <new>

#include <fmt/format.h>

namespace retools::detail {
namespace {

struct Budget {
    long long used = 0;
    bool exceeded = false;
};

// hiredis' own functions (what redisReaderCreate installs), read once.
const redisReplyObjectFunctions& hiredis_functions() {
    static const redisReplyObjectFunctions functions = [] {
        redisReader* r = redisReaderCreate();
        if (r == nullptr) throw std::bad_alloc();
        redisReplyObjectFunctions f = *r->fn;
        redisReaderFree(r);
        return f;
    }();
    return functions;
}

void* create_array(const redisReadTask* task, int elements) {
    if (auto* budget = static_cast<Budget*>(task->privdata)) {
        budget->used += elements > 0 ? elements : 0;
        if (budget->used > kMaxReplyElements) {
            budget->exceeded = true;
            return nullptr;  // hiredis stops with an error; nothing is allocated
        }
    }
    return hiredis_functions().createArray(task, elements);
}

redisReplyObjectFunctions* bounded_functions() {
    static redisReplyObjectFunctions functions = [] {
        redisReplyObjectFunctions f = hiredis_functions();
        f.createArray = create_array;
        return f;
    }();
    return &functions;
}

}  // namespace

redisReader* create_reply_reader() {
    redisReader* r = redisReaderCreateWithFunctions(bounded_functions());
    if (r == nullptr) throw std::bad_alloc();
    r->privdata = new Budget;
    return r;
}

void free_reply_reader(redisReader* reader) noexcept {
    if (reader == nullptr) return;
    delete static_cast<Budget*>(reader->privdata);
    redisReaderFree(reader);
}

int next_reply(redisReader* reader, void** reply) {
    const int status = redisReaderGetReply(reader, reply);
    if (status == REDIS_OK && *reply != nullptr) static_cast<Budget*>(reader->privdata)->used = 0;
    return status;
}

std::string reply_reader_error(const redisReader* reader) {
    const auto* budget = static_cast<const Budget*>(reader->privdata);
    if (budget != nullptr && budget->exceeded)
        return fmt::format("a reply declared more than {} array elements", kMaxReplyElements);
    return reader->errstr;
}

}  // namespace retools::detail
