// Private: which SIMD instruction sets the run-time dispatch may use. Environment overrides let the tests (and users
// chasing a suspected SIMD bug) force the portable baseline paths:
//   XCCA_DISABLE_AVX2=1    no AVX2 (and hence no AVX-512) kernels
//   XCCA_DISABLE_AVX512=1  no AVX-512 kernels
// Functions dispatched by GCC's target_clones (ifunc) are not affected; they compute identical results anyway.
#pragma once

#include <cstdlib>

namespace xcca::detail {

inline bool env_set(const char* name) noexcept {
    const char* v = std::getenv(name);
    return v != nullptr && v[0] != '\0' && !(v[0] == '0' && v[1] == '\0');
}

#if defined(__GNUC__) && defined(__x86_64__)
inline bool cpu_has_avx2() noexcept {
    static const bool yes = __builtin_cpu_supports("avx2") && !env_set("XCCA_DISABLE_AVX2");
    return yes;
}
inline bool cpu_has_avx2_fma() noexcept {
    static const bool yes = cpu_has_avx2() && __builtin_cpu_supports("fma");
    return yes;
}
inline bool cpu_has_avx512() noexcept {
    static const bool yes = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                            __builtin_cpu_supports("avx512dq") && !env_set("XCCA_DISABLE_AVX512");
    return yes;
}
#else
inline bool cpu_has_avx2() noexcept { return false; }
inline bool cpu_has_avx2_fma() noexcept { return false; }
inline bool cpu_has_avx512() noexcept { return false; }
#endif

}  // namespace xcca::detail
