include(CMakePackageConfigHelpers)

set(BELLOWS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bellows)

install(TARGETS bellows bellows_asio EXPORT bellowsTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/bellows DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/bellows/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bellows)
install(EXPORT bellowsTargets NAMESPACE bellows:: DESTINATION ${BELLOWS_CMAKE_DIR})

configure_package_config_file(cmake/bellowsConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/bellowsConfig.cmake
                              INSTALL_DESTINATION ${BELLOWS_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/bellowsConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/bellowsConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/bellowsConfigVersion.cmake
        DESTINATION ${BELLOWS_CMAKE_DIR})

# pkg-config, for Meson, autotools and plain Makefiles. The Asio macros bellows requires go into
# Cflags, read from the target so that they cannot drift from what the library was built with.
# liburing is public (Asio's io_uring code is compiled into the user's own translation units);
# verbs, rdmacm and libcrypto are the library's own, needed at link time only when it is static.
get_target_property(bellows_asio_defines bellows_asio INTERFACE_COMPILE_DEFINITIONS)
list(TRANSFORM bellows_asio_defines PREPEND "-D")
list(JOIN bellows_asio_defines " " BELLOWS_PC_DEFINES)
if(BUILD_SHARED_LIBS)
  set(BELLOWS_PC_REQUIRES "liburing")
  set(BELLOWS_PC_REQUIRES_PRIVATE "Requires.private: libibverbs librdmacm libcrypto")
else()
  set(BELLOWS_PC_REQUIRES "liburing libibverbs librdmacm libcrypto")
  set(BELLOWS_PC_REQUIRES_PRIVATE "")
endif()
file(RELATIVE_PATH BELLOWS_PC_TO_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/$" "" BELLOWS_PC_TO_PREFIX "${BELLOWS_PC_TO_PREFIX}")
configure_file(cmake/bellows.pc.in ${CMAKE_CURRENT_BINARY_DIR}/bellows.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/bellows.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# A Debian package of the same files: `cpack -G DEB` in the build tree makes libbellows-dev.
# Its dependencies are the -dev packages a consumer compiles and links against; versions are
# bookworm's, the oldest this is built and tested with.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME libbellows-dev)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "C++20 coroutine message channels over RDMA and shared memory (development files)")
set(CPACK_PACKAGE_DESCRIPTION
    "Channels whose receive rings start at 4 KiB per peer and grow on demand, over shm://, and rdma:// through rdma-core. Headers, static library, CMake package and pkg-config file.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "bellows maintainers <maintainers@users.noreply.b-seed-ced9c760.example>")
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libasio-dev (>= 1:1.22), liburing-dev (>= 2.3), libibverbs-dev (>= 44), librdmacm-dev (>= 44), libssl-dev (>= 3.0), pkg-config")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
include(CPack)
