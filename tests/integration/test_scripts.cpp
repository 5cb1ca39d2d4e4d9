// The Lua scripts embedded from src/<component>/lua/*.lua (generated/lua_scripts.hpp):
// each is its file's text, verbatim, after the libraries it names with
// `--! use`; each compiles in a real Redis (Lua 5.1) under the SHA-1 the
// library computes, so EVALSHA finds what EVAL or SCRIPT LOAD stored.

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/script.hpp>

#include "generated/lua_scripts.hpp"
#include "lock/scripts.hpp"
#include "redis_test.hpp"

namespace lua = retools::detail::lua;
namespace fs = std::filesystem;
namespace rt = retools::test;

namespace {

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

const lua::Embedded* find(std::string_view name) {
    for (const auto& e : lua::all)
        if (e.name == name) return &e;
    return nullptr;
}

}  // namespace

class ScriptsTest : public rt::RedisTest {};

TEST_F(ScriptsTest, EveryEmbeddedScriptLoadsUnderTheShaTheLibraryComputes) {
    ASSERT_FALSE(lua::all.empty());
    for (const auto& e : lua::all) {
        SCOPED_TRACE(std::string(e.file));
        retools::Script script{std::string(e.source)};
        try {
            EXPECT_EQ(conn.command("SCRIPT", "LOAD", script.source()).as_string(), script.sha());
        } catch (const retools::ReplyError& error) {
            ADD_FAILURE() << "Redis refused " << e.file << ": " << error.what();
            continue;
        }
        EXPECT_EQ(conn.command("SCRIPT", "EXISTS", script.sha())[0].as_integer(), 1);
    }
}

TEST_F(ScriptsTest, EveryLuaFileOfTheSourceTreeIsEmbedded) {
    std::set<std::string> embedded;
    for (const auto& e : lua::all) embedded.emplace(e.file);
    std::size_t files = 0;
    for (const auto& component : fs::directory_iterator(fs::path(RETOOLS_SOURCE_DIR) / "src")) {
        const fs::path dir = component.path() / "lua";
        if (!fs::is_directory(dir)) continue;
        for (const auto& file : fs::directory_iterator(dir)) {
            if (file.path().extension() != ".lua") continue;
            ++files;
            const std::string shown = fs::relative(file.path(), RETOOLS_SOURCE_DIR).generic_string();
            EXPECT_TRUE(embedded.count(shown))
                << shown << " is not in retools_embed_lua's list (CMakeLists.txt)";
        }
    }
    EXPECT_EQ(files, lua::all.size());
}

TEST_F(ScriptsTest, EmbeddedTextIsTheFileAfterTheLibrariesItUses) {
    for (const auto& e : lua::all) {
        SCOPED_TRACE(std::string(e.file));
        const std::string text = read_file(fs::path(RETOOLS_SOURCE_DIR) / e.file);
        ASSERT_FALSE(text.empty());
        std::string expected;
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            if (!line.starts_with("--! use ")) continue;
            const lua::Embedded* used = find(line.substr(8));
            ASSERT_NE(used, nullptr) << line;
            expected += used->source;
        }
        expected += text;
        EXPECT_EQ(e.source, expected);
    }
    // A script that calls a library's function has it in front.
    EXPECT_TRUE(lua::worker_fetch.starts_with(lua::queue_failed_entry));
    EXPECT_NE(lua::worker_fetch.find("local function count_finished("), std::string_view::npos);
}

TEST_F(ScriptsTest, LockScriptsRunTheEmbeddedText) {
    EXPECT_EQ(retools::detail::lock_acquire_script().source(), lua::lock_acquire);
    EXPECT_EQ(retools::detail::lock_release_script().source(), lua::lock_release);
    EXPECT_EQ(retools::detail::lock_extend_script().source(), lua::lock_extend);
    EXPECT_EQ(retools::detail::limiter_acquire_script().source(), lua::lock_limiter_acquire);
    // ...and the text does what its header says: a fencing token on acquire.
    retools::Reply r = retools::detail::lock_acquire_script()(conn, {"k", "k:fence", "k:waiting"}, "tok",
                                                              10000, 86400000, 0);
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].as_integer(), 1);
    EXPECT_GT(r[1].as_integer(), 0);
    EXPECT_EQ(conn.command("GET", "k").as_string(), "tok");
}
