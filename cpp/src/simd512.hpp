// Private: AVX-512 pixel loads shared by polar.cpp and conic.cpp (the second pass of their bilinear loops). Include
// inside an x86-64 / !XCCA_NO_SIMD guard, after <immintrin.h>.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <immintrin.h>

namespace xcca::simd512 {

namespace {  // internal linkage: compiled in each including file

// GCC 12's intrinsic headers trip -W(maybe-)uninitialized inside target()-attributed functions (false positives).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define XCCA_SIMD512_TARGET __attribute__((target("avx512f,avx512vl,avx512dq"), optimize("fp-contract=off")))

// Eight 32-bit pixels (as raw bits) widened exactly to double.
template <class In>
XCCA_SIMD512_TARGET inline __m512d widen8(__m256i bits) {
    if constexpr (std::is_same_v<In, float>)
        return _mm512_cvtps_pd(_mm256_castsi256_ps(bits));
    else
        return _mm512_cvtepi32_pd(bits);
}

// Eight pixel pairs (img[k[l]], img[k[l] + 1]) from stored offsets, de-interleaved: left pixels in the low half,
// right pixels in the high half.
template <class In>
XCCA_SIMD512_TARGET inline __m512i pairs8(const In* img, const std::int32_t* k, __m512i deinterleave) {
    long long v[8];
    for (int l = 0; l < 8; ++l) std::memcpy(&v[l], img + k[l], 8);
    const __m128i a0 = _mm_insert_epi64(_mm_cvtsi64_si128(v[0]), v[1], 1);
    const __m128i a1 = _mm_insert_epi64(_mm_cvtsi64_si128(v[2]), v[3], 1);
    const __m128i a2 = _mm_insert_epi64(_mm_cvtsi64_si128(v[4]), v[5], 1);
    const __m128i a3 = _mm_insert_epi64(_mm_cvtsi64_si128(v[6]), v[7], 1);
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(a0), a1, 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(a2), a3, 1);
    return _mm512_permutexvar_epi32(deinterleave, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
}

#undef XCCA_SIMD512_TARGET
#pragma GCC diagnostic pop

}  // namespace

}  // namespace xcca::simd512
