# llama.cmake - finds or builds llama.cpp for the model runtime (index/model/).
#
# An installed llama.cpp is used when CMake finds one with the API ctxd needs;
# otherwise the source carried by the npm package node-llama-cpp (pinned below)
# is fetched and built once, at configure time, as a static optimised CPU
# library. The same source always provides the vocabulary-only GGUFs
# (models/ggml-vocab-*.gguf) and gguf-py that the tests use.
#
# Cache variables:
#   CTXD_LLAMA            AUTO (default) | SYSTEM | BUNDLED
#   CTXD_DEPS_DIR         where the npm tarball, the source and the built
#                         library live (default: $CTXD_DEPS_DIR, else
#                         <build>/_deps). Build trees that name the same
#                         directory share one llama.cpp build (.ci/run does).
#   CTXD_LLAMA_SRC        an existing llama.cpp checkout to use instead of
#                         fetching (it must be the pinned commit for BUNDLED
#                         builds to mean anything; it is not checked).
#   CTXD_LLAMA_NATIVE     -march=native for ggml (default ON: CI runs on the
#                         machine type that built it).
#   CTXD_LLAMA_AMX        let -march=native use Intel AMX (default OFF: the
#                         Sapphire Rapids VMs here advertise AMX and grant
#                         ARCH_REQ_XCOMP_PERM, yet tileloadd raises SIGILL,
#                         so quantized models would crash).
#   CTXD_LLAMA_CMAKE_ARGS extra arguments for the bundled build (a ;-list,
#                         e.g. -DGGML_CUDA=ON).
# Results: the target ctxd_llama (headers + libraries), and
#   CTXD_LLAMA_SOURCE_DIR  the llama.cpp source (models/, gguf-py/)
#   CTXD_LLAMA_ORIGIN      "system" or "bundled <commit>"

set(CTXD_LLAMA_NPM_VERSION 3.22.1)
set(CTXD_LLAMA_NPM_SHA256 a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f)
set(CTXD_LLAMA_COMMIT de3ff815ea7d559ee917f063901b8986f038abc6)

set(CTXD_LLAMA AUTO CACHE STRING "llama.cpp: AUTO, SYSTEM or BUNDLED")
set_property(CACHE CTXD_LLAMA PROPERTY STRINGS AUTO SYSTEM BUNDLED)
if(DEFINED ENV{CTXD_DEPS_DIR} AND NOT "$ENV{CTXD_DEPS_DIR}" STREQUAL "")
  set(_ctxd_deps_default "$ENV{CTXD_DEPS_DIR}")
else()
  set(_ctxd_deps_default "${CMAKE_BINARY_DIR}/_deps")
endif()
set(CTXD_DEPS_DIR "${_ctxd_deps_default}" CACHE PATH "Cache of fetched and built dependencies (llama.cpp)")
set(CTXD_LLAMA_SRC "" CACHE PATH "An existing llama.cpp source tree (skips the npm fetch)")
option(CTXD_LLAMA_NATIVE "Build the bundled ggml with -march=native" ON)
option(CTXD_LLAMA_AMX "Let the native build of ggml use Intel AMX" OFF)
set(CTXD_LLAMA_CMAKE_ARGS "" CACHE STRING "Extra CMake arguments for the bundled llama.cpp")

if(NOT CTXD_LLAMA MATCHES "^(AUTO|SYSTEM|BUNDLED)$")
  message(FATAL_ERROR "CTXD_LLAMA must be AUTO, SYSTEM or BUNDLED (got '${CTXD_LLAMA}')")
endif()
file(MAKE_DIRECTORY "${CTXD_DEPS_DIR}")

# Run a command at configure time; on failure show the tail of its log.
function(_ctxd_run what log)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_FILE "${log}" ERROR_FILE "${log}.err")
  if(NOT rc EQUAL 0)
    file(READ "${log}.err" err)
    file(READ "${log}" out)
    string(LENGTH "${out}" n)
    if(n GREATER 4000)
      math(EXPR from "${n} - 4000")
      string(SUBSTRING "${out}" ${from} -1 out)
    endif()
    message(FATAL_ERROR "ctxd: ${what} failed (${rc}):\n${out}\n${err}\nFull log: ${log}")
  endif()
endfunction()

# The llama.cpp source: node-llama-cpp's git bundle, checked out at the
# pinned commit. Guarded by a lock so build trees sharing CTXD_DEPS_DIR can
# configure at once.
function(_ctxd_llama_fetch out)
  set(src "${CTXD_DEPS_DIR}/llama.cpp-${CTXD_LLAMA_COMMIT}")
  if(NOT EXISTS "${src}/.ctxd-complete")
    file(LOCK "${CTXD_DEPS_DIR}/llama.lock" GUARD FUNCTION TIMEOUT 3600)
  endif()
  if(NOT EXISTS "${src}/.ctxd-complete")
    find_program(CTXD_NPM npm)
    find_program(CTXD_GIT git)
    if(NOT CTXD_NPM OR NOT CTXD_GIT)
      message(FATAL_ERROR "ctxd: fetching llama.cpp needs npm and git (deploy/install-deps.sh), "
        "or set CTXD_LLAMA_SRC to a llama.cpp source tree")
    endif()
    set(npmdir "${CTXD_DEPS_DIR}/npm")
    set(tgz "${npmdir}/node-llama-cpp-${CTXD_LLAMA_NPM_VERSION}.tgz")
    file(MAKE_DIRECTORY "${npmdir}")
    if(EXISTS "${tgz}")
      file(SHA256 "${tgz}" sum)
      if(NOT sum STREQUAL CTXD_LLAMA_NPM_SHA256)
        file(REMOVE "${tgz}")
      endif()
    endif()
    if(NOT EXISTS "${tgz}")
      message(STATUS "ctxd: npm pack node-llama-cpp@${CTXD_LLAMA_NPM_VERSION}")
      _ctxd_run("npm pack node-llama-cpp@${CTXD_LLAMA_NPM_VERSION}" "${npmdir}/pack.log"
        ${CTXD_NPM} pack --silent --pack-destination "${npmdir}"
        "node-llama-cpp@${CTXD_LLAMA_NPM_VERSION}")
    endif()
    file(SHA256 "${tgz}" sum)
    if(NOT sum STREQUAL CTXD_LLAMA_NPM_SHA256)
      message(FATAL_ERROR "ctxd: ${tgz} has SHA-256 ${sum}, expected ${CTXD_LLAMA_NPM_SHA256}")
    endif()
    file(REMOVE_RECURSE "${npmdir}/x")
    file(ARCHIVE_EXTRACT INPUT "${tgz}" DESTINATION "${npmdir}/x"
      PATTERNS package/llama/gitRelease.bundle)
    file(REMOVE_RECURSE "${src}.tmp")
    _ctxd_run("git clone of the llama.cpp bundle" "${npmdir}/clone.log"
      ${CTXD_GIT} clone --quiet --no-checkout "${npmdir}/x/package/llama/gitRelease.bundle" "${src}.tmp")
    _ctxd_run("git checkout ${CTXD_LLAMA_COMMIT}" "${npmdir}/checkout.log"
      ${CTXD_GIT} -C "${src}.tmp" -c advice.detachedHead=false checkout --quiet "${CTXD_LLAMA_COMMIT}")
    file(REMOVE_RECURSE "${npmdir}/x" "${src}")
    file(RENAME "${src}.tmp" "${src}")
    file(TOUCH "${src}/.ctxd-complete")
  endif()
  set(${out} "${src}" PARENT_SCOPE)
endfunction()

# Build and install the pinned llama.cpp into a prefix named by everything
# that changes the result (commit, compiler, options).
function(_ctxd_llama_build src out)
  set(flags "")
  if(CTXD_LLAMA_NATIVE AND NOT CTXD_LLAMA_AMX)
    include(CheckCCompilerFlag)
    check_c_compiler_flag(-mno-amx-tile CTXD_HAVE_MNO_AMX)
    if(CTXD_HAVE_MNO_AMX)
      set(flags "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
    endif()
  endif()
  set(args
    "-DCMAKE_C_FLAGS=${flags}" "-DCMAKE_CXX_FLAGS=${flags}"
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_IS_DEV=OFF
    # ggml's own thread pool rather than OpenMP: no busy-waiting libgomp
    # shared with FAISS's, and nothing ThreadSanitizer cannot follow.
    -DGGML_OPENMP=OFF
    -DGGML_NATIVE=${CTXD_LLAMA_NATIVE}
    -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
    -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    ${CTXD_LLAMA_CMAKE_ARGS})
  string(SHA1 key "${CTXD_LLAMA_COMMIT};${CMAKE_C_COMPILER_ID};${CMAKE_C_COMPILER_VERSION};${args}")
  string(SUBSTRING "${key}" 0 10 key)
  string(SUBSTRING "${CTXD_LLAMA_COMMIT}" 0 10 short)
  set(prefix "${CTXD_DEPS_DIR}/llama-${short}-${key}")
  if(NOT EXISTS "${prefix}/.ctxd-complete")
    file(LOCK "${CTXD_DEPS_DIR}/llama.lock" GUARD FUNCTION TIMEOUT 3600)
  endif()
  if(NOT EXISTS "${prefix}/.ctxd-complete")
    cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
    if(DEFINED ENV{CTXD_LLAMA_JOBS})
      set(ncpu $ENV{CTXD_LLAMA_JOBS})
    endif()
    message(STATUS "ctxd: building llama.cpp ${short} (static, CPU, -O3) into ${prefix}; "
      "this happens once per CTXD_DEPS_DIR and takes a few minutes")
    set(bdir "${prefix}.build")
    file(REMOVE_RECURSE "${bdir}" "${prefix}")
    _ctxd_run("configuring llama.cpp" "${CTXD_DEPS_DIR}/llama-configure.log"
      ${CMAKE_COMMAND} -S "${src}" -B "${bdir}" -DCMAKE_INSTALL_PREFIX=${prefix} ${args})
    _ctxd_run("building llama.cpp" "${CTXD_DEPS_DIR}/llama-build.log"
      ${CMAKE_COMMAND} --build "${bdir}" --parallel ${ncpu})
    _ctxd_run("installing llama.cpp" "${CTXD_DEPS_DIR}/llama-install.log"
      ${CMAKE_COMMAND} --install "${bdir}")
    file(REMOVE_RECURSE "${bdir}")
    file(TOUCH "${prefix}/.ctxd-complete")
  endif()
  set(${out} "${prefix}" PARENT_SCOPE)
endfunction()

# Does the llama.cpp behind `target` have the API lm.c uses? Compile only.
function(_ctxd_llama_api_ok target out)
  include(CheckCSourceCompiles)
  include(CMakePushCheckState)
  cmake_push_check_state(RESET)
  get_target_property(inc ${target} INTERFACE_INCLUDE_DIRECTORIES)
  set(CMAKE_REQUIRED_INCLUDES ${inc})
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  set(CMAKE_REQUIRED_QUIET ON)
  unset(CTXD_LLAMA_API_OK CACHE)
  check_c_source_compiles([[
    #include <llama.h>
    #include <ggml-backend.h>
    int main(void) {
      struct llama_context_params p = llama_context_default_params();
      p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
      p.cb_eval = 0;
      (void)llama_memory_seq_rm; (void)llama_model_n_head_kv; (void)llama_vocab_n_tokens;
      (void)llama_get_embeddings_seq; (void)ggml_backend_tensor_get;
      return (int)p.n_ctx;
    }]] CTXD_LLAMA_API_OK)
  cmake_pop_check_state()
  set(${out} ${CTXD_LLAMA_API_OK} PARENT_SCOPE)
endfunction()

if(CTXD_LLAMA_SRC)
  set(CTXD_LLAMA_SOURCE_DIR "${CTXD_LLAMA_SRC}")
else()
  _ctxd_llama_fetch(CTXD_LLAMA_SOURCE_DIR)
endif()

# A previous configure's find_package left llama_DIR/ggml_DIR pointing at
# the bundled build: forget them, or a later configure would take that build
# for an installed llama.cpp (and keep it after the options change).
foreach(v llama_DIR ggml_DIR)
  if(DEFINED CACHE{${v}})
    string(FIND "$CACHE{${v}}" "${CTXD_DEPS_DIR}/llama-" at)
    if(at EQUAL 0)
      unset(${v} CACHE)
    endif()
  endif()
endforeach()

set(_ctxd_llama_found FALSE)
if(NOT CTXD_LLAMA STREQUAL "BUNDLED")
  find_package(llama CONFIG QUIET)
  if(llama_FOUND AND TARGET llama)
    set(_ctxd_llama_target llama)
  else()
    pkg_check_modules(LLAMA_PC QUIET IMPORTED_TARGET llama)
    if(LLAMA_PC_FOUND)
      set(_ctxd_llama_target PkgConfig::LLAMA_PC)
    endif()
  endif()
  if(_ctxd_llama_target)
    _ctxd_llama_api_ok(${_ctxd_llama_target} ok)
    if(ok)
      set(_ctxd_llama_found TRUE)
      set(CTXD_LLAMA_ORIGIN "system")
    else()
      message(STATUS "ctxd: the installed llama.cpp lacks the API ctxd uses; building the pinned one")
    endif()
  endif()
  if(NOT _ctxd_llama_found AND CTXD_LLAMA STREQUAL "SYSTEM")
    message(FATAL_ERROR "ctxd: CTXD_LLAMA=SYSTEM but no usable llama.cpp was found "
      "(find_package(llama) / pkg-config llama)")
  endif()
endif()

if(NOT _ctxd_llama_found)
  _ctxd_llama_build("${CTXD_LLAMA_SOURCE_DIR}" _ctxd_llama_prefix)
  find_package(llama CONFIG REQUIRED PATHS "${_ctxd_llama_prefix}" NO_DEFAULT_PATH)
  set(_ctxd_llama_target llama)
  set(CTXD_LLAMA_ORIGIN "bundled ${CTXD_LLAMA_COMMIT}")
endif()

# llama.cpp is C++: C executables that link it statically need the C++
# runtime (its imported targets do not make CMake link them as C++).
add_library(ctxd_llama INTERFACE)
target_link_libraries(ctxd_llama INTERFACE ${_ctxd_llama_target} stdc++)
# Cached too, so that scripts (tests/bench) can read it from CMakeCache.txt.
set(CTXD_LLAMA_SOURCE_DIR "${CTXD_LLAMA_SOURCE_DIR}" CACHE INTERNAL "llama.cpp source (models/, gguf-py/)")
message(STATUS "ctxd: llama.cpp ${CTXD_LLAMA_ORIGIN}; source ${CTXD_LLAMA_SOURCE_DIR}")
