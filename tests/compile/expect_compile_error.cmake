# cmake -DCOMPILER=... -DINCLUDE_DIR=... -DSOURCE=... -DDEFINE=... -DEXPECT=... -P expect_compile_error.cmake
# Passes when compiling SOURCE with -DDEFINE fails with a diagnostic matching
# EXPECT: a failure for any other reason (a missing header, a typo) fails.
execute_process(
  COMMAND ${COMPILER} -std=c++20 -fsyntax-only -I${INCLUDE_DIR} -D${DEFINE} ${SOURCE}
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled with -D${DEFINE}; it must not")
endif()
if(NOT output MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE} failed to compile, but not with \"${EXPECT}\":\n${output}")
endif()
message(STATUS "rejected as expected: ${EXPECT}")
