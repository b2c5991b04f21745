# cfs_add_library(NAME [TYPE STATIC|SHARED|OBJECT] [ALIAS SHORT] SOURCES file...)
# One shape for every cfs library: its public headers are the calling directory's include/
# (installed under include/), and with ALIAS it is also cfs::SHORT, under which the installed
# CMake package exports it.
function(cfs_add_library name)
  cmake_parse_arguments(ARG "" "TYPE;ALIAS" "SOURCES" ${ARGN})
  add_library(${name} ${ARG_TYPE} ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  if(ARG_ALIAS)
    add_library(cfs::${ARG_ALIAS} ALIAS ${name})
    set_target_properties(${name} PROPERTIES EXPORT_NAME ${ARG_ALIAS})
  endif()
endfunction()
