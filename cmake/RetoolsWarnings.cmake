# RETOOLS_WERROR turns every warning into an error (CI sets it).
option(RETOOLS_WERROR "Treat compiler warnings as errors" OFF)

function(retools_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
      # GCC 12 flags designated initializers that omit defaulted fields, the intended style.
      -Wno-missing-field-initializers)
    if(RETOOLS_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
