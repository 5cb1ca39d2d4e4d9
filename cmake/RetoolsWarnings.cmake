# RETOOLS_WERROR turns every warning into an error; on by default under CI
# (CI=true in the environment when the tree is first configured).
if("$ENV{CI}" STREQUAL "true")
  set(_retools_werror_default ON)
else()
  set(_retools_werror_default OFF)
endif()
option(RETOOLS_WERROR "Treat compiler warnings as errors" ${_retools_werror_default})

function(retools_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
      # GCC 12 flags designated initializers that omit defaulted fields, the intended style.
      -Wno-missing-field-initializers)
    # A unity build includes each source into a batch file, so GCC takes a
    # test fixture in an anonymous namespace for one declared in a header.
    if(CMAKE_UNITY_BUILD AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE -Wno-subobject-linkage)
    endif()
    if(RETOOLS_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
