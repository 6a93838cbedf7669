# ctest -P script: install the build into a fresh prefix, then configure, build and
# run examples/ as a downstream project that only knows find_package(Trellis).
# Unoptimised: this checks the package, not the code, which the main build compiles
# optimised, and -O0 compiles the examples several times faster.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install into ${prefix} failed")
endif()
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples -B ${WORK_DIR}/build
          -DCMAKE_PREFIX_PATH=${prefix} -DKokkos_DIR=${KOKKOS_DIR}
          -DCMAKE_CXX_COMPILER=${CXX_COMPILER} "-DCMAKE_CXX_FLAGS=${CXX_FLAGS} -O0"
          -DCMAKE_BUILD_TYPE=
  RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring examples/ against the installed package failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2 RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building examples/ against the installed package failed")
endif()
if(RUN_EXAMPLE)
  execute_process(COMMAND ${WORK_DIR}/build/quickstart/trellis_quickstart --small RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "the installed quickstart example failed")
  endif()
endif()
file(GLOB_RECURSE found ${prefix}/*/TrellisConfig.cmake)
message(STATUS "installed package: ${found}")
