// The run correlator's result pass compiled for AVX-512 F/VL/DQ (8 double lanes): runcorr_isa_unit.hpp. One vector
// inverse FFT serves 8 pairs instead of AVX2's 4 (measured: about half the FFT time at n = 3600), with the same bits.
#define XCCA_RC_ISA isa_avx512
#define XCCA_RC_LANES 8
#define XCCA_RC_TARGET _Pragma("GCC target(\"avx2,fma,avx512f,avx512vl,avx512dq\")")
#define XCCA_RC_POCKETFFT xcca_pocketfft_rc_avx512
#define XCCA_RC_AVAILABLE (xcca::detail::cpu_has_avx512() && xcca::detail::cpu_has_avx2_fma())
#define XCCA_RC_NAME "AVX-512"
#include "runcorr_isa_unit.hpp"
