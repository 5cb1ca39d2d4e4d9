# The library's src/ folders, one responsibility each (docs/architecture.md).
#
# retools_component(<folder> SOURCES <files> [USES <folders>] [LIBS <targets>])
# makes the OBJECT library retools_<folder> from src/<folder>/<files>. USES
# lists exactly the other src/ folders the folder may use, LIBS the external
# libraries it may call. The `retools` library is built from every folder's
# objects; retools_check_architecture() makes the build fail when a folder
# uses one it did not declare.
# What src/tools/ (the programs, not a library folder) may use besides the
# public headers: ids for the dashboard, the queue's key layout for the views.
set(RETOOLS_TOOLS_USES "util,queue")

function(retools_component folder)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;USES;LIBS")
  set(target retools_${folder})
  add_library(${target} OBJECT ${arg_SOURCES})
  target_include_directories(${target} PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
  target_compile_features(${target} PRIVATE cxx_std_20)
  list(TRANSFORM arg_USES PREPEND retools_ OUTPUT_VARIABLE uses)
  target_link_libraries(${target} PRIVATE
    fmt::fmt nlohmann_json::nlohmann_json Threads::Threads ${uses} ${arg_LIBS})
  retools_set_warnings(${target})
  set_property(GLOBAL APPEND PROPERTY RETOOLS_COMPONENTS ${folder})
  set_property(GLOBAL PROPERTY RETOOLS_COMPONENT_USES_${folder} ${arg_USES})
  set_property(GLOBAL PROPERTY RETOOLS_COMPONENT_LIBS_${folder} ${arg_LIBS})
endfunction()

# The declared graph as one argument for cmake/RetoolsCheckIncludes.cmake:
# "util:|python:util|client:util|..." (folder, then the folders it may use).
function(retools_architecture_graph out)
  get_property(components GLOBAL PROPERTY RETOOLS_COMPONENTS)
  set(graph "")
  foreach(folder IN LISTS components)
    get_property(uses GLOBAL PROPERTY RETOOLS_COMPONENT_USES_${folder})
    list(JOIN uses "," uses)
    list(APPEND graph "${folder}:${uses}")
  endforeach()
  list(JOIN graph "|" graph)
  set(${out} "${graph}" PARENT_SCOPE)
endfunction()

# Two checks, both part of the default build:
# - includes: every `#include "<folder>/..."` under src/ names the folder
#   itself or one it declared (src/tools/ may use util/ and queue/: the queue's key layout for the views), and no public
#   header includes src/. This also catches header-only uses.
# - links: per folder, a shared library of its own objects linked with
#   --no-undefined against the check libraries of the folders it declares and
#   its external libraries only. A call into an undeclared folder fails to link
#   and the linker names the symbol; a folder reached only through another's
#   declaration counts as undeclared too (ld does not search the libraries a
#   linked library needs). The objects are reused: nothing compiles twice.
#   Left out under sanitizers and fuzzing, whose runtimes a shared library built
#   with --no-undefined cannot find.
function(retools_check_architecture)
  get_property(components GLOBAL PROPERTY RETOOLS_COMPONENTS)
  retools_architecture_graph(graph)
  set(dir ${PROJECT_BINARY_DIR}/architecture)

  set(watched ${PROJECT_SOURCE_DIR}/cmake/RetoolsCheckIncludes.cmake)
  foreach(folder IN LISTS components ITEMS tools)
    file(GLOB_RECURSE files CONFIGURE_DEPENDS
      ${PROJECT_SOURCE_DIR}/src/${folder}/*.cpp ${PROJECT_SOURCE_DIR}/src/${folder}/*.hpp)
    list(APPEND watched ${files})
  endforeach()
  file(GLOB_RECURSE files CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/*.hpp)
  list(APPEND watched ${files})
  add_custom_command(OUTPUT ${dir}/includes.stamp
    COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} "-DGRAPH=${graph}|tools:${RETOOLS_TOOLS_USES}"
            -P ${PROJECT_SOURCE_DIR}/cmake/RetoolsCheckIncludes.cmake
    COMMAND ${CMAKE_COMMAND} -E touch ${dir}/includes.stamp
    DEPENDS ${watched}
    COMMENT "Checking that src/ folders include only the folders they declare"
    VERBATIM)
  add_custom_target(retools_check_includes ALL DEPENDS ${dir}/includes.stamp)

  if(RETOOLS_SANITIZE OR RETOOLS_BUILD_FUZZERS OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    return()
  endif()
  foreach(folder IN LISTS components)
    get_property(uses GLOBAL PROPERTY RETOOLS_COMPONENT_USES_${folder})
    get_property(libs GLOBAL PROPERTY RETOOLS_COMPONENT_LIBS_${folder})
    list(TRANSFORM uses PREPEND retools_check_)
    set(target retools_check_${folder})
    add_library(${target} SHARED $<TARGET_OBJECTS:retools_${folder}>)
    target_link_libraries(${target} PRIVATE ${uses} ${libs} fmt::fmt Threads::Threads ${CMAKE_DL_LIBS})
    target_link_options(${target} PRIVATE LINKER:--no-undefined)
    set_target_properties(${target} PROPERTIES
      LINKER_LANGUAGE CXX
      LIBRARY_OUTPUT_DIRECTORY ${dir})
  endforeach()
endfunction()
