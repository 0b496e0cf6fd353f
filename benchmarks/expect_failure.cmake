# ctest helper: run COMMAND (a ;-list), pass only if it exits non-zero and its
# output contains EXPECT. For "an impossible request fails with its reason".
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "expected a failure, got exit 0:\n${out}${err}")
endif()
string(FIND "${out}${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "exit ${rc}, but the output does not say '${EXPECT}':\n${out}${err}")
endif()
message(STATUS "failed as expected (exit ${rc}): ${EXPECT}")
