include(CMakePackageConfigHelpers)

install(TARGETS retools retools_hiredis EXPORT retoolsTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/retools DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT retoolsTargets NAMESPACE retools::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)

configure_package_config_file(cmake/retoolsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/retoolsConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/retoolsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/retoolsConfig.cmake
  ${PROJECT_BINARY_DIR}/retoolsConfigVersion.cmake
  cmake/RetoolsDependencies.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/retools)

configure_file(cmake/retools.pc.in ${PROJECT_BINARY_DIR}/retools.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/retools.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
