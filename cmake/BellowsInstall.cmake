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
