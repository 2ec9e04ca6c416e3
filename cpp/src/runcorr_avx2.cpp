// The run correlator's result pass compiled for AVX2 + FMA (4 double lanes): runcorr_isa_unit.hpp.
#define XCCA_RC_ISA isa_avx2
#define XCCA_RC_LANES 4
#define XCCA_RC_TARGET _Pragma("GCC target(\"avx2,fma\")")
#define XCCA_RC_POCKETFFT xcca_pocketfft_rc_avx2
#define XCCA_RC_AVAILABLE xcca::detail::cpu_has_avx2_fma()
#define XCCA_RC_NAME "AVX2"
#include "runcorr_isa_unit.hpp"
