#pragma once
// EXPECT_THROW_MSG(statement, ExceptionType, "text"): the statement throws
// ExceptionType (or a subclass) whose what() contains "text". The one helper for
// every "expected an exception" check in the suite.

#include <gtest/gtest.h>

#include <string>

#define RETOOLS_THROW_MSG_IMPL_(statement, type, text, fail)                                  \
    do {                                                                                    \
        bool retools_thrown_ = false;                                                       \
        try {                                                                               \
            statement;                                                                      \
        } catch (const type& retools_e_) {                                                  \
            retools_thrown_ = true;                                                         \
            std::string retools_what_ = retools_e_.what();                                  \
            if (retools_what_.find(text) == std::string::npos)                              \
                fail() << #type " message \"" << retools_what_ << "\" lacks \"" << (text) << "\""; \
        }                                                                                   \
        if (!retools_thrown_) fail() << #statement " did not throw " #type;                 \
    } while (false)

#define EXPECT_THROW_MSG(statement, type, text) RETOOLS_THROW_MSG_IMPL_(statement, type, text, ADD_FAILURE)
#define ASSERT_THROW_MSG(statement, type, text) RETOOLS_THROW_MSG_IMPL_(statement, type, text, FAIL)
