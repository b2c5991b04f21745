# cfs_oci: OCI images in a repository (sources, layer import, layer merge, EROFS at pull,
# tags, OCI fsck). A separate library so libarchive and libselinux stay out of cfs_store.
find_package(Threads REQUIRED)
pkg_check_modules(SELINUX REQUIRED IMPORTED_TARGET libselinux)
add_library(cfs_oci
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_tar.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_tree.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_source.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_skopeo.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_pull.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_images.cc
  ${CMAKE_CURRENT_LIST_DIR}/src/oci_boot.cc
)
add_library(cfs::oci ALIAS cfs_oci)
target_link_libraries(cfs_oci PUBLIC cfs_store
  PRIVATE PkgConfig::LIBARCHIVE PkgConfig::SELINUX OpenSSL::Crypto Threads::Threads
  $<BUILD_INTERFACE:nlohmann_json::nlohmann_json>)
