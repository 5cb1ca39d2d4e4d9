// QueueManager's value semantics and the API's compile-time argument rules,
// without a server (a Connection opens nothing until a command is sent).
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/queue.hpp>

#include "queue/test_hooks.hpp"

using retools::QueueManager;
using retools::detail::make_payload;

namespace {

bool has(const std::string& text, std::string_view part) {
    return text.find(part) != std::string::npos;
}

std::string payload_of(const QueueManager& qm) {
    return make_payload(qm, "id1", "app.jobs:work", {{"n", 1}});
}

QueueManager configured() {
    QueueManager qm{retools::Connection{retools::ConnectionOptions{}}, "low"};
    qm.subscriber("job_failure", "app.jobs:on_failure");
    return qm;
}

}  // namespace

static_assert(std::is_copy_constructible_v<QueueManager> && std::is_copy_assignable_v<QueueManager>);
static_assert(std::is_nothrow_move_constructible_v<QueueManager> &&
              std::is_nothrow_move_assignable_v<QueueManager>);

TEST(QueueManagerValue, CopyHasTheConfigurationAndIsConfiguredIndependently) {
    QueueManager qm = configured();
    QueueManager copy = qm;
    EXPECT_EQ(copy.default_queue_name(), "low");
    EXPECT_TRUE(has(payload_of(copy), "app.jobs:on_failure"));

    copy.subscriber("job_postrun", "app.jobs:after");
    EXPECT_TRUE(has(payload_of(copy), "app.jobs:after"));
    EXPECT_FALSE(has(payload_of(qm), "app.jobs:after"));  // the original is untouched
    qm.subscriber("job_prerun", "app.jobs:before");
    EXPECT_FALSE(has(payload_of(copy), "app.jobs:before"));
}

TEST(QueueManagerValue, AssignmentReplacesTheConfiguration) {
    QueueManager source = configured();
    QueueManager target{retools::Connection{retools::ConnectionOptions{}}, "main"};
    target.subscriber("job_postrun", "app.jobs:old");
    target = source;
    EXPECT_EQ(target.default_queue_name(), "low");
    EXPECT_TRUE(has(payload_of(target), "app.jobs:on_failure"));
    EXPECT_FALSE(has(payload_of(target), "app.jobs:old"));
}

TEST(QueueManagerValue, MoveCarriesTheConfiguration) {
    QueueManager source = configured();
    QueueManager moved = std::move(source);
    EXPECT_EQ(moved.default_queue_name(), "low");
    EXPECT_TRUE(has(payload_of(moved), "app.jobs:on_failure"));
    source = moved;  // a moved-from manager may be assigned to
    EXPECT_TRUE(has(payload_of(source), "app.jobs:on_failure"));
}

// One definition of text for commands, cache keys and pickle: nullptr is not
// text anywhere (commands reject it; keys and pickle render it as None).
static_assert(retools::detail::StringLike<std::string> && retools::detail::StringLike<const char*>);
static_assert(!retools::detail::StringLike<std::nullptr_t>);
static_assert(!retools::detail::CommandArg<std::nullptr_t>);
static_assert(retools::detail::CommandArg<std::vector<std::string>>);
