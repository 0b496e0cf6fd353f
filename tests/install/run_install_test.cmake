# Installs the build into a scratch prefix, moves the prefix (an installed epx
# must not depend on where it was installed), then with no LD_LIBRARY_PATH:
# runs every installed program's --help, a 2-rank check of epx-bench dispatch
# launched by the installed epxrun, and builds tests/install/consumer against
# the moved prefix twice, with find_package(epx) and with pkg-config (epx.pc),
# and runs both on 2 ranks; the C consumer too, both ways.
# Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, MPIEXEC, MPIEXEC_FLAGS (;-list),
# LIBDIR (CMAKE_INSTALL_LIBDIR), CXX_COMPILER, C_COMPILER, PKG_CONFIG (empty: that part fails,
# pkg-config is required). The C consumer (tests/capi/test_capi.c, epx.h only) is built with
# the C compiler through find_package (tests/install/c_consumer, a C-only project) and
# pkg-config, and runs on 2 ranks.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
function(run)
  message(STATUS "install test: ${ARGN}")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH ${ARGN}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: failed (${rc}): ${ARGN}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/installed)
file(RENAME ${WORK_DIR}/installed ${WORK_DIR}/moved)
set(prefix ${WORK_DIR}/moved)
if(EXISTS ${WORK_DIR}/installed)
  message(FATAL_ERROR "install test: ${WORK_DIR}/installed still exists after the move")
endif()

# Every program starts from the moved prefix: the RUNPATH is $ORIGIN-relative.
foreach(tool epxrun epx-bench epx-eplb epx-train epx-serve epx-generate)
  if(NOT EXISTS ${prefix}/bin/${tool})
    message(FATAL_ERROR "install test: ${tool} is not installed in ${prefix}/bin")
  endif()
  run(${prefix}/bin/${tool} --help)
endforeach()

# The main job, small, through the installed launcher: epxrun finds epx-bench
# next to itself, and the ranks load libepx from the moved prefix.
run(${prefix}/bin/epxrun -n 2 -- epx-bench dispatch --check-only --tokens 64 --hidden 128
    --topk 4 --experts 8)

# find_package(epx).
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${MPIEXEC} -n 2 ${MPIEXEC_FLAGS} ${WORK_DIR}/build/epx_consumer)

# find_package(epx) from C: a project with no C++ compiler enabled, so MPI
# comes as its C component (epxConfig.cmake).
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/c_consumer -B ${WORK_DIR}/build_c
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=${C_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build_c)
run(${MPIEXEC} -n 2 ${MPIEXEC_FLAGS} ${WORK_DIR}/build_c/epx_c_consumer)

# pkg-config: the way a Makefile user builds, c++ app.cpp $(pkg-config ...).
if(NOT PKG_CONFIG)
  message(FATAL_ERROR "install test: pkg-config not found (apt-get install pkgconf)")
endif()
set(ENV{PKG_CONFIG_PATH} ${prefix}/${LIBDIR}/pkgconfig)
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs epx RESULT_VARIABLE rc
                OUTPUT_VARIABLE pc_flags OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install test: pkg-config --cflags --libs epx failed (${rc})")
endif()
message(STATUS "install test: pkg-config --cflags --libs epx: ${pc_flags}")
string(FIND "${pc_flags}" "-I${prefix}/" at)
if(at LESS 0)
  message(FATAL_ERROR "install test: epx.pc does not point into the moved prefix: ${pc_flags}")
endif()
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run(${CXX_COMPILER} -std=c++20 ${SOURCE_DIR}/tests/install/consumer/main.cpp ${pc_flags}
    -o ${WORK_DIR}/epx_consumer_pc)
# epx.pc gives no rpath (pkg-config files do not); the loader is told here.
run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${prefix}/${LIBDIR}
    ${MPIEXEC} -n 2 ${MPIEXEC_FLAGS} ${WORK_DIR}/epx_consumer_pc)

# The C ABI from C against the installed header and library.
run(${C_COMPILER} -std=c11 -ffp-contract=off ${SOURCE_DIR}/tests/capi/test_capi.c ${pc_flags}
    -o ${WORK_DIR}/epx_c_consumer_pc)
run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${prefix}/${LIBDIR}
    ${MPIEXEC} -n 2 ${MPIEXEC_FLAGS} ${WORK_DIR}/epx_c_consumer_pc)
