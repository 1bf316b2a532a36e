# Install rules: headers, the library, a CMake package and a pkg-config file.
#
#   find_package(singleflight CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE singleflight::singleflight)
# or
#   c++ app.cpp $(pkg-config --cflags --libs singleflight)
#
# The public headers include <uv.h> and the standard library only, so libuv is
# the one public dependency. hiredis, OpenSSL and msgpack are private: msgpack is
# header-only and never reaches a consumer; hiredis does reach the consumer's
# link line when the library is static, because a static archive cannot carry
# its own dependencies.
#
# Why shared is the default (BUILD_SHARED_LIBS, root CMakeLists.txt): a shared
# libsingleflight records hiredis as its own DT_NEEDED, so a consumer needs
# neither hiredis's headers nor its pkg-config file, and the pkg-config file's
# `Requires.private: hiredis` is then exactly right. A static build is
# supported too: its package config finds hiredis with pkg-config and links
# it (LINK_ONLY), and its pkg-config file lists hiredis in Requires so a plain
# `pkg-config --libs` links. scripts/check_install.sh checks both kinds.

include(CMakePackageConfigHelpers)

# A parent project that adds singleflight with add_subdirectory() usually does
# not want its install tree to get our files as well.
option(SINGLEFLIGHT_INSTALL "Generate the install target" ${SF_TOP_LEVEL})
if(NOT SINGLEFLIGHT_INSTALL)
  return()
endif()

set(SF_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/singleflight"
    CACHE STRING "Where singleflightConfig.cmake is installed, relative to the prefix")
mark_as_advanced(SF_CMAKE_INSTALL_DIR)

get_target_property(SF_LIBRARY_TYPE singleflight TYPE)
if(SF_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(SF_STATIC_LIBRARY ON)
  # In the build tree hiredis is linked PRIVATE through $<BUILD_INTERFACE:...>,
  # which the export drops. The installed static target needs it on its
  # consumers' link line: name the imported target that the package config
  # recreates with pkg_check_modules(HIREDIS ... IMPORTED_TARGET hiredis).
  target_link_libraries(singleflight
    INTERFACE "$<INSTALL_INTERFACE:$<LINK_ONLY:PkgConfig::HIREDIS>>"
              "$<INSTALL_INTERFACE:$<LINK_ONLY:PkgConfig::OPENSSL>>")
else()
  set(SF_STATIC_LIBRARY OFF)
endif()

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/singleflight"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT singleflight_Development
        FILES_MATCHING PATTERN "*.h")

install(TARGETS singleflight
        EXPORT singleflightTargets
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT singleflight_Runtime
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT singleflight_Runtime
                NAMELINK_COMPONENT singleflight_Development
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT singleflight_Development
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(EXPORT singleflightTargets
        NAMESPACE singleflight::
        DESTINATION "${SF_CMAKE_INSTALL_DIR}"
        COMPONENT singleflight_Development)

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/singleflightConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/singleflightConfig.cmake"
  INSTALL_DESTINATION "${SF_CMAKE_INSTALL_DIR}")
# 0.x: SameMajorVersion accepts any 0.y; the public API is not frozen yet.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/singleflightConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/singleflightConfig.cmake"
              "${PROJECT_BINARY_DIR}/singleflightConfigVersion.cmake"
        DESTINATION "${SF_CMAKE_INSTALL_DIR}"
        COMPONENT singleflight_Development)

# pkg-config. The file locates its prefix from its own directory (${pcfiledir})
# when the install dirs are relative, so `cmake --install --prefix X` and a
# moved install tree both work; absolute install dirs are written as they are.
if(SF_STATIC_LIBRARY)
  set(SF_PC_REQUIRES "libuv hiredis openssl")
  set(SF_PC_REQUIRES_PRIVATE "")
else()
  set(SF_PC_REQUIRES "libuv")
  set(SF_PC_REQUIRES_PRIVATE "hiredis openssl")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(SF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # From <prefix>/<libdir>/pkgconfig back up to <prefix>.
  file(RELATIVE_PATH SF_PC_UP "/sf-root/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/sf-root")
  string(REGEX REPLACE "/$" "" SF_PC_UP "${SF_PC_UP}")
  set(SF_PC_PREFIX "\${pcfiledir}/${SF_PC_UP}")
endif()
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(SF_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(SF_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
configure_file("${CMAKE_CURRENT_LIST_DIR}/singleflight.pc.in"
               "${PROJECT_BINARY_DIR}/singleflight.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/singleflight.pc"
        DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
        COMPONENT singleflight_Development)
