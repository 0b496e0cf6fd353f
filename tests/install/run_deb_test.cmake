# The Debian package. MODE=package: builds it with cpack -G DEB, checks its
# Depends and its files, unpacks it and runs a program from the unpacked tree.
# MODE=bare_root: installs it with apt-get into a bare Debian 12 root
# (EPX_DEBIAN_ROOT, e.g. made by debootstrap bookworm; needs root for chroot)
# and runs the programs there; without such a root it prints "skipped: ..."
# and ctest reports the test skipped.
# Inputs: BUILD_DIR, WORK_DIR, MODE.
function(run)
  message(STATUS "deb test: ${ARGN}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "deb test: failed (${rc}): ${ARGN}\n${out}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()
function(expect text what)
  string(FIND "${out}" "${text}" at)
  if(at LESS 0)
    message(FATAL_ERROR "deb test: ${what} lacks '${text}':\n${out}")
  endif()
endfunction()

if(MODE STREQUAL "package")
  file(REMOVE_RECURSE ${WORK_DIR})
  run(cpack -G DEB --config ${BUILD_DIR}/CPackConfig.cmake -B ${WORK_DIR})
  file(GLOB debs ${WORK_DIR}/epx_*.deb)
  list(LENGTH debs n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "deb test: expected one epx_*.deb in ${WORK_DIR}, found ${n}")
  endif()
  file(RENAME ${debs} ${WORK_DIR}/epx.deb)
  run(dpkg-deb -f ${WORK_DIR}/epx.deb Depends)
  foreach(dep libopenmpi3 openmpi-bin libopenblas0 libyaml-cpp0.7 libcpp-httplib0.11)
    expect(${dep} "Depends")
  endforeach()
  run(dpkg-deb -c ${WORK_DIR}/epx.deb)
  foreach(f usr/bin/epxrun usr/bin/epx-bench usr/bin/epx-eplb usr/bin/epx-train usr/bin/epx-serve
            usr/bin/epx-generate
            usr/lib/libepx.so.0 usr/lib/pkgconfig/epx.pc usr/lib/cmake/epx/epxConfig.cmake
            usr/include/epx/epx.hpp usr/include/epx/config.hpp)
    expect("./${f}" "the package's files")
  endforeach()
  run(dpkg-deb -x ${WORK_DIR}/epx.deb ${WORK_DIR}/unpacked)
  run(${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH ${WORK_DIR}/unpacked/usr/bin/epx-bench --help)
elseif(MODE STREQUAL "bare_root")
  set(root "$ENV{EPX_DEBIAN_ROOT}")
  if(NOT root OR NOT EXISTS "${root}/etc/debian_version")
    message("skipped: no bare Debian 12 root (set EPX_DEBIAN_ROOT to one made by "
            "'debootstrap bookworm DIR', with apt sources it can reach)")
    return()
  endif()
  file(COPY ${WORK_DIR}/epx.deb DESTINATION ${root}/tmp)
  run(chroot ${root} apt-get install -y -q /tmp/epx.deb)
  foreach(tool epxrun epx-bench epx-eplb epx-train epx-serve epx-generate)
    run(chroot ${root} /usr/bin/${tool} --help)
  endforeach()
  run(chroot ${root} /usr/bin/epxrun -n 2 -- epx-bench dispatch --check-only --tokens 64
      --hidden 128 --topk 4 --experts 8)
else()
  message(FATAL_ERROR "deb test: MODE=${MODE}, expected package or bare_root")
endif()
