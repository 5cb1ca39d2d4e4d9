include(CMakePackageConfigHelpers)

# Only the library: its hiredis target is a build-time detail (see CMakeLists.txt).
install(TARGETS retools EXPORT retoolsTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/retools DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT retoolsTargets NAMESPACE retools::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)

# What retoolsConfig.cmake must find: the public link interface always; a
# static library's private dependencies (OpenSSL, hiredis) too.
get_target_property(_retools_type retools TYPE)
if(_retools_type STREQUAL "STATIC_LIBRARY")
  set(RETOOLS_CONFIG_STATIC ON)
else()
  set(RETOOLS_CONFIG_STATIC OFF)
endif()
configure_package_config_file(cmake/retoolsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/retoolsConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/retoolsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/retoolsConfig.cmake
  ${PROJECT_BINARY_DIR}/retoolsConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)

# Relocatable: the prefix is found from where the .pc file is installed, so
# `cmake --install --prefix DIR` gives a working file too.
set(_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(IS_ABSOLUTE "${_pc_dir}")
  set(RETOOLS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _up "/root/${_pc_dir}" "/root")
  string(REGEX REPLACE "/$" "" _up "${_up}")
  set(RETOOLS_PC_PREFIX "\${pcfiledir}/${_up}")
endif()
set(RETOOLS_PC_LIBS_PRIVATE "")
foreach(_lib IN LISTS CMAKE_DL_LIBS)
  string(APPEND RETOOLS_PC_LIBS_PRIVATE " -l${_lib}")
endforeach()
string(STRIP "${RETOOLS_PC_LIBS_PRIVATE}" RETOOLS_PC_LIBS_PRIVATE)
configure_file(cmake/retools.pc.in ${PROJECT_BINARY_DIR}/retools.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/retools.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
