# cmake -DPROJECT_SOURCE_DIR=<source tree> -DFILE=<file.lua> -P embed_check.cmake
# Runs retools_embed_lua's checks on one file, as configuring the project does
# (a file that passes them stops at add_library, which a script cannot call).
cmake_minimum_required(VERSION 3.25)
include("${PROJECT_SOURCE_DIR}/cmake/RetoolsEmbedLua.cmake")
retools_embed_lua(embed_check HEADER embed_check.hpp FILES "${FILE}")
