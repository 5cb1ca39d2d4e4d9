# cmake -DSOURCE_DIR=<repo> -DGRAPH="util:|client:util|lock:client,util|..." -P RetoolsCheckIncludes.cmake
#
# Fails, naming each file and line, when a file in src/<folder>/ includes
# "<other>/..." for a src/ folder <other> that <folder> does not declare in
# GRAPH, or when a public header (include/) includes anything from src/.
# Run by the build (target retools_check_includes) and by the unit tests.
cmake_minimum_required(VERSION 3.25)
if(NOT SOURCE_DIR OR NOT GRAPH)
  message(FATAL_ERROR "usage: cmake -DSOURCE_DIR=<repo> -DGRAPH=<folder:uses,...|...> -P ${CMAKE_SCRIPT_MODE_FILE}")
endif()

# Every folder of src/ counts, declared or not (a stale "core/" too).
file(GLOB entries LIST_DIRECTORIES true RELATIVE ${SOURCE_DIR}/src ${SOURCE_DIR}/src/*)
set(src_folders "")
foreach(entry IN LISTS entries)
  if(IS_DIRECTORY ${SOURCE_DIR}/src/${entry})
    list(APPEND src_folders ${entry})
  endif()
endforeach()

set(include_regex "^[ \t]*#[ \t]*include[ \t]*[\"<]([A-Za-z0-9_]+)/")
set(errors "")

string(REPLACE "|" ";" graph "${GRAPH}")
foreach(entry IN LISTS graph)
  string(REGEX MATCH "^([^:]+):(.*)$" _ "${entry}")
  set(folder ${CMAKE_MATCH_1})
  string(REPLACE "," " " declared "${CMAKE_MATCH_2}")
  if(declared STREQUAL "")
    set(declared "no other folder")
  endif()
  string(REPLACE "," ";" allowed "${CMAKE_MATCH_2}")
  list(APPEND allowed ${folder})
  file(GLOB_RECURSE files ${SOURCE_DIR}/src/${folder}/*.cpp ${SOURCE_DIR}/src/${folder}/*.hpp
                          ${SOURCE_DIR}/src/${folder}/*.h)
  foreach(file IN LISTS files)
    file(STRINGS ${file} lines)
    set(number 0)
    foreach(line IN LISTS lines)
      math(EXPR number "${number} + 1")
      if(line MATCHES "${include_regex}")
        set(used ${CMAKE_MATCH_1})
        if(used IN_LIST src_folders AND NOT used IN_LIST allowed)
          file(RELATIVE_PATH shown ${SOURCE_DIR} ${file})
          string(STRIP "${line}" line)
          list(APPEND errors "${shown}:${number}: ${line}: src/${folder}/ does not declare ${used} "
                             "(it may use: ${declared}, declared in src/${folder}/CMakeLists.txt)\n")
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()

# Public headers: the standard library, fmt, nlohmann_json, other public headers.
file(GLOB_RECURSE headers ${SOURCE_DIR}/include/*)
foreach(file IN LISTS headers)
  file(STRINGS ${file} lines)
  set(number 0)
  foreach(line IN LISTS lines)
    math(EXPR number "${number} + 1")
    if(line MATCHES "${include_regex}" AND CMAKE_MATCH_1 IN_LIST src_folders)
      file(RELATIVE_PATH shown ${SOURCE_DIR} ${file})
      list(APPEND errors "${shown}:${number}: a public header includes src/${CMAKE_MATCH_1}/\n")
    endif()
  endforeach()
endforeach()

if(errors)
  # NOTICE prints the lines as they are (an error message would be re-wrapped).
  string(JOIN "" errors ${errors})
  message(NOTICE "${errors}")
  message(FATAL_ERROR "undeclared uses between src/ folders (see above and docs/architecture.md)")
endif()
