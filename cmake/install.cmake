# Install the libraries with headers, a pkg-config file and a CMake package config, so other
# programs can use find_package(cfs) / pkg-config cfs.
include(CMakePackageConfigHelpers)

set(CFS_INSTALL_LIBS cfs_base cfs_erofs cfs_store)
install(TARGETS ${CFS_INSTALL_LIBS} EXPORT cfsTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY base/include/ erofs/include/ store/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT cfsTargets NAMESPACE cfs:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cfs)

configure_package_config_file(cmake/cfsConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cfsConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cfs)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cfsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cfsConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/cfsConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cfs)

file(RELATIVE_PATH CFS_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/cfs.pc.in ${CMAKE_CURRENT_BINARY_DIR}/cfs.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cfs.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

if(CFS_WITH_LIBCOMPOSEFS)
  # Installable beside C composefs' package or instead of it: same soname, headers and .pc.
  install(TARGETS cfs_libcomposefs
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Development)
  install(DIRECTORY libcomposefs/include/libcomposefs DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(FILES ${CMAKE_BINARY_DIR}/libcomposefs/composefs.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
