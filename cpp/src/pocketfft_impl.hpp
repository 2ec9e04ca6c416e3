// Private: the one place that includes pocketfft. XCCA_POCKETFFT_HEADER is the header's full path, set by CMake.
#pragma once

#define POCKETFFT_NO_MULTITHREADING  // xcca threads over rows itself
#include XCCA_POCKETFFT_HEADER
