# Every dependency comes from the system (Debian packages); nothing is downloaded.
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.9 REQUIRED)
# TLS (rediss://): the library owns its transport, as Debian's hiredis 0.14 has no TLS.
find_package(OpenSSL REQUIRED)

# Debian's hiredis 0.14 ships no CMake config, only pkg-config; newer ones ship both.
find_package(hiredis QUIET CONFIG)
# retools_hiredis is internal (never exported); RETOOLS_HIREDIS_INSTALL_LINK
# is what an installed static libretools asks its consumers to link instead.
if(TARGET hiredis::hiredis)
  add_library(retools_hiredis INTERFACE)
  target_link_libraries(retools_hiredis INTERFACE hiredis::hiredis)
  set(RETOOLS_HIREDIS_FROM_CONFIG ON)
  set(RETOOLS_HIREDIS_INSTALL_LINK hiredis::hiredis)
else()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
  add_library(retools_hiredis INTERFACE)
  target_link_libraries(retools_hiredis INTERFACE PkgConfig::HIREDIS)
  set(RETOOLS_HIREDIS_FROM_CONFIG OFF)
  set(RETOOLS_HIREDIS_INSTALL_LINK ${HIREDIS_LIBRARIES})  # library names (-lhiredis)
endif()
