# Third-party dependencies, all from Debian packages. Kept in one file so the installed
# package config can replay exactly the same lookups (see bellowsConfig.cmake.in).

find_package(PkgConfig REQUIRED)
# liburing for Asio's file I/O (see bellows_asio below), verbs and rdmacm for the RDMA provider,
# OpenSSL's libcrypto for the pre-shared key handshake (fabric/peer_proof.hpp).
pkg_check_modules(liburing REQUIRED IMPORTED_TARGET GLOBAL liburing)
pkg_check_modules(libibverbs REQUIRED IMPORTED_TARGET GLOBAL libibverbs)
pkg_check_modules(librdmacm REQUIRED IMPORTED_TARGET GLOBAL librdmacm)
pkg_check_modules(libcrypto REQUIRED IMPORTED_TARGET GLOBAL libcrypto)
find_package(Threads REQUIRED)

# Debian ships Asio header-only and without a CMake package: wrap it in an INTERFACE target so
# that every translation unit sees the same configuration macros.
find_path(BELLOWS_ASIO_INCLUDE_DIR asio.hpp REQUIRED)
if(NOT TARGET bellows_asio)
  add_library(bellows_asio INTERFACE)
  add_library(bellows::asio ALIAS bellows_asio)
  target_include_directories(bellows_asio SYSTEM INTERFACE "$<BUILD_INTERFACE:${BELLOWS_ASIO_INCLUDE_DIR}>")
  # clang 14 does not advertise coroutine support to Asio 1.22 on its own. Asio 1.22 picks
  # aligned_alloc or operator new for its handler memory by whether a libstdc++ header came
  # before its own, which differs between translation units; a block recycled across two of
  # them was then freed with the wrong function (ASan: alloc-dealloc-mismatch). One choice for all.
  # ASIO_HAS_IO_URING gives files (asio::random_access_file) to io_uring while sockets stay on
  # epoll. It also changes the size of Asio's recycled handler blocks, so it must be the same in
  # every translation unit of a program: set here, for the library and all its users alike.
  target_compile_definitions(bellows_asio INTERFACE ASIO_STANDALONE ASIO_NO_DEPRECATED ASIO_HAS_CO_AWAIT
                                                    ASIO_DISABLE_STD_ALIGNED_ALLOC ASIO_HAS_IO_URING)
  target_link_libraries(bellows_asio INTERFACE Threads::Threads PkgConfig::liburing)
endif()
