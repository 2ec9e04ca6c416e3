# The Python extension modules: xcca._core (pybind11 over xcca::core) and xcca._binning (Cython).
enable_language(C)
find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
find_package(pybind11 3 CONFIG REQUIRED)

file(GLOB XCCA_BINDING_SOURCES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/cpp/bindings/*.cpp")
pybind11_add_module(_core MODULE ${XCCA_BINDING_SOURCES})
target_include_directories(_core PRIVATE "${PROJECT_SOURCE_DIR}/cpp/bindings")
target_link_libraries(_core PRIVATE xcca::core ${CMAKE_DL_LIBS})  # dl: finding OpenBLAS's thread control
install(TARGETS _core DESTINATION xcca)

find_package(Cython 3.1 MODULE REQUIRED)
include(UseCython)
cython_transpile("${PROJECT_SOURCE_DIR}/python/xcca/_binning.pyx" LANGUAGE C OUTPUT_VARIABLE _binning_c)
python_add_library(_binning MODULE "${_binning_c}" WITH_SOABI)
target_include_directories(_binning PRIVATE "${PROJECT_SOURCE_DIR}/python/xcca")  # _dilate_simd.h
if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(_binning PRIVATE -O3 -Wno-unused-function -Wno-unreachable-code)
  if(XCCA_NATIVE)
    target_compile_options(_binning PRIVATE -march=native)
  endif()
endif()
install(TARGETS _binning DESTINATION xcca)
