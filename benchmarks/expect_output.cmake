# ctest helper: run COMMAND (a ;-list), pass only if it exits 0 and its output
# (stdout and stderr) matches the regular expression EXPECT.
# For "the logs say what they should".
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "exit ${rc}:\n${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output does not match '${EXPECT}':\n${out}${err}")
endif()
message(STATUS "exit 0, output matches: ${EXPECT}")
