# Installs the build into a scratch prefix, builds tests/install/consumer
# against it with find_package(epx), and runs it on 2 ranks.
# Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, MPIEXEC, MPIEXEC_FLAGS (;-list).
file(REMOVE_RECURSE ${WORK_DIR})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${MPIEXEC} -n 2 ${MPIEXEC_FLAGS} ${WORK_DIR}/build/epx_consumer)
