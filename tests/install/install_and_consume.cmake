# Installs the already built tree into a fresh prefix, then builds and runs the consumer twice:
# with CMake's find_package(bellows), and with the compiler alone and `pkg-config --cflags
# --libs bellows`, as a Makefile would. Arguments: BUILD_DIR, CONSUMER_DIR, WORK_DIR, CXX,
# CONSUMER_FLAGS.
file(REMOVE_RECURSE "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build" "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix"
    "-DCMAKE_CXX_FLAGS=${CONSUMER_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_FLAGS}")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")

file(GLOB pc_file "${WORK_DIR}/prefix/lib*/pkgconfig/bellows.pc" "${WORK_DIR}/prefix/lib/*/pkgconfig/bellows.pc")
if(NOT pc_file)
  message(FATAL_ERROR "no bellows.pc installed under ${WORK_DIR}/prefix")
endif()
get_filename_component(pc_dir "${pc_file}" DIRECTORY)
execute_process(COMMAND ${CMAKE_COMMAND} -E env "PKG_CONFIG_PATH=${pc_dir}" pkg-config --cflags --libs bellows
                OUTPUT_VARIABLE pc_flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs bellows failed (${rc})")
endif()
message(STATUS "pkg-config --cflags --libs bellows: ${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
separate_arguments(extra_flags UNIX_COMMAND "${CONSUMER_FLAGS}")
run(${CXX} ${extra_flags} "${CONSUMER_DIR}/main.cpp" -o "${WORK_DIR}/consumer_pc" ${pc_flags})
run("${WORK_DIR}/consumer_pc")
