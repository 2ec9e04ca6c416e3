# Locate the BSD-licensed pocketfft header (pocketfft_hdronly). By default it is the copy shipped in the pythran
# wheel (pythran/pythonic/numpy/fft/pocketfft.hpp), found through the build's Python; C++-only users may point
# XCCA_POCKETFFT_INCLUDE_DIR at a directory holding pocketfft_hdronly.hpp or pocketfft.hpp instead.
set(XCCA_POCKETFFT_INCLUDE_DIR "" CACHE PATH "Directory containing pocketfft_hdronly.hpp (or pythran's pocketfft.hpp)")

if(NOT XCCA_POCKETFFT_INCLUDE_DIR)
  find_package(Python COMPONENTS Interpreter)
  if(Python_Interpreter_FOUND)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
              "import os, pythran; print(os.path.join(os.path.dirname(pythran.__file__), 'pythonic', 'numpy', 'fft'), end='')"
      OUTPUT_VARIABLE _xcca_pythran_fft_dir
      RESULT_VARIABLE _xcca_pythran_rc
      ERROR_QUIET)
    if(_xcca_pythran_rc EQUAL 0)
      set(_xcca_pocketfft_hint "${_xcca_pythran_fft_dir}")
    endif()
  endif()
else()
  set(_xcca_pocketfft_hint "${XCCA_POCKETFFT_INCLUDE_DIR}")
endif()

unset(XCCA_POCKETFFT_HEADER CACHE)
find_file(XCCA_POCKETFFT_HEADER NAMES pocketfft_hdronly.hpp pocketfft.hpp
          HINTS "${_xcca_pocketfft_hint}" NO_DEFAULT_PATH)
if(NOT XCCA_POCKETFFT_HEADER)
  message(FATAL_ERROR
    "xcca: pocketfft header not found. Install pythran into the Python CMake finds (pip install pythran), "
    "or pass -DXCCA_POCKETFFT_INCLUDE_DIR=<dir containing pocketfft_hdronly.hpp>.")
endif()
message(STATUS "xcca: pocketfft header: ${XCCA_POCKETFFT_HEADER}")
