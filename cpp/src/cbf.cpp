// CBF byte-offset decoder and MD5 (see xcca/cbf.hpp). Written from the CBF byte-offset description and RFC 1321.
#include "xcca/cbf.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "cpu_features.hpp"
#include "xcca/threads.hpp"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#include <immintrin.h>
#define XCCA_CBF_SIMD 1
#endif

namespace xcca {

// ------------------------------------------------------------------------------------------------------ MD5

namespace {

// RFC 1321's table K[i] = floor(2^32 * |sin(i + 1)|), generated from that formula (the ctest checks the RFC's
// test vectors). Compile-time constants: they become immediates in the unrolled rounds.
constexpr std::uint32_t kMd5K[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au,
    0xa8304613u, 0xfd469501u, 0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u, 0xf61e2562u, 0xc040b340u,
    0x265e5a51u, 0xe9b6c7aau, 0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu, 0xa9e3e905u, 0xfcefa3f8u,
    0x676f02d9u, 0x8d2a4c8au, 0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u, 0x289b7ec6u, 0xeaa127fau,
    0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u,
    0xffeff47du, 0x85845dd1u, 0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

inline std::uint32_t rotl(std::uint32_t x, int s) noexcept { return (x << s) | (x >> (32 - s)); }

inline std::uint32_t load_le32(const std::uint8_t* p) noexcept {
    return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
           static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

// One 64-byte block. The four rounds differ in their boolean function, message order and shifts; the loops have
// constant trip counts so the compiler unrolls them into the straight-line 64 steps.
void md5_block(std::uint32_t state[4], const std::uint8_t* block) noexcept {
    const std::uint32_t* K = kMd5K;
    std::uint32_t x[16];
    for (int i = 0; i < 16; ++i) x[i] = load_le32(block + 4 * i);
    std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
#define XCCA_MD5_STEP(f, w, xx, yy, zz, m, s, i) w = xx + rotl(w + f(xx, yy, zz) + x[m] + K[i], s)
#define XCCA_F(u, v, t) (((u) & (v)) | (~(u) & (t)))
#define XCCA_G(u, v, t) (((u) & (t)) | ((v) & ~(t)))
#define XCCA_H(u, v, t) ((u) ^ (v) ^ (t))
#define XCCA_I(u, v, t) ((v) ^ ((u) | ~(t)))
    for (int i = 0; i < 16; i += 4) {
        XCCA_MD5_STEP(XCCA_F, a, b, c, d, i, 7, i);
        XCCA_MD5_STEP(XCCA_F, d, a, b, c, i + 1, 12, i + 1);
        XCCA_MD5_STEP(XCCA_F, c, d, a, b, i + 2, 17, i + 2);
        XCCA_MD5_STEP(XCCA_F, b, c, d, a, i + 3, 22, i + 3);
    }
    for (int i = 0; i < 16; i += 4) {
        XCCA_MD5_STEP(XCCA_G, a, b, c, d, (5 * i + 1) % 16, 5, 16 + i);
        XCCA_MD5_STEP(XCCA_G, d, a, b, c, (5 * i + 6) % 16, 9, 17 + i);
        XCCA_MD5_STEP(XCCA_G, c, d, a, b, (5 * i + 11) % 16, 14, 18 + i);
        XCCA_MD5_STEP(XCCA_G, b, c, d, a, (5 * i + 16) % 16, 20, 19 + i);
    }
    for (int i = 0; i < 16; i += 4) {
        XCCA_MD5_STEP(XCCA_H, a, b, c, d, (3 * i + 5) % 16, 4, 32 + i);
        XCCA_MD5_STEP(XCCA_H, d, a, b, c, (3 * i + 8) % 16, 11, 33 + i);
        XCCA_MD5_STEP(XCCA_H, c, d, a, b, (3 * i + 11) % 16, 16, 34 + i);
        XCCA_MD5_STEP(XCCA_H, b, c, d, a, (3 * i + 14) % 16, 23, 35 + i);
    }
    for (int i = 0; i < 16; i += 4) {
        XCCA_MD5_STEP(XCCA_I, a, b, c, d, (7 * i) % 16, 6, 48 + i);
        XCCA_MD5_STEP(XCCA_I, d, a, b, c, (7 * i + 7) % 16, 10, 49 + i);
        XCCA_MD5_STEP(XCCA_I, c, d, a, b, (7 * i + 14) % 16, 15, 50 + i);
        XCCA_MD5_STEP(XCCA_I, b, c, d, a, (7 * i + 21) % 16, 21, 51 + i);
    }
#undef XCCA_MD5_STEP
#undef XCCA_F
#undef XCCA_G
#undef XCCA_H
#undef XCCA_I
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

}  // namespace

Md5::Md5() noexcept : state_{0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u}, buffer_{} {}

void Md5::update(const void* data, std::size_t n) noexcept {
    if (n == 0) return;  // data may be null then (memcpy of a null pointer is undefined even for 0 bytes)
    const auto* p = static_cast<const std::uint8_t*>(data);
    length_ += n;
    if (buffered_ > 0) {
        const std::size_t take = std::min(n, 64 - buffered_);
        std::memcpy(buffer_ + buffered_, p, take);
        buffered_ += take;
        p += take;
        n -= take;
        if (buffered_ < 64) return;
        md5_block(state_, buffer_);
        buffered_ = 0;
    }
    for (; n >= 64; p += 64, n -= 64) md5_block(state_, p);
    std::memcpy(buffer_, p, n);
    buffered_ = n;
}

Md5Digest Md5::finish() noexcept {
    const std::uint64_t bits = length_ * 8;
    std::uint8_t pad[72] = {0x80};
    const std::size_t npad = (buffered_ < 56 ? 56 : 120) - buffered_;
    for (int i = 0; i < 8; ++i) pad[npad + i] = static_cast<std::uint8_t>(bits >> (8 * i));
    update(pad, npad + 8);
    Md5Digest out{};
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<std::uint8_t>(state_[i] >> (8 * j));
    return out;
}

Md5Digest md5(const void* data, std::size_t n) noexcept {
    Md5 h;
    h.update(data, n);
    return h.finish();
}

// ---------------------------------------------------------------------------------------------- byte offset

const char* cbf_status_message(CbfStatus status) noexcept {
    switch (status) {
        case CbfStatus::ok: return "ok";
        case CbfStatus::truncated_escape: return "the data end inside an escape sequence";
        case CbfStatus::too_few_values: return "the data end before every pixel has a value";
        case CbfStatus::trailing_bytes: return "bytes are left after the last pixel";
        case CbfStatus::md5_mismatch: return "the MD5 of the data does not match";
    }
    return "unknown status";
}

namespace {

// Where the decoder puts its values. A sink hands out buffers ("chunks") of chunk_size() values, the decoder fills
// each one completely and passes it back to flush(); the last chunk may be shorter (the values left). A chunk
// that an error cut short is never flushed.
// ArraySink: the whole image is one chunk, the output array itself (decode_byte_offset).
template <class T>
struct ArraySink {
    static constexpr bool folds = false;
    T* out;
    std::size_t n;
    std::size_t chunk_size() const noexcept { return n; }
    T* chunk(std::size_t done) noexcept { return out + done; }
    void flush(const T*, std::size_t) noexcept {}
};

// ---- escape-free runs of 32-bit pixels in SIMD registers
// A run decoder: out[k] = last += (int8) src[k] for k < its return value r, where r <= m and src[0, r) holds no
// escape byte 0x80; it stops at the first 0x80 (or at m), `last` updated. The same wrapping uint32 sums as the
// scalar loop (a sum of sign-extended bytes is the same modulo 2^32 in any order of association), so the values
// are bit-identical; the scalar loop decodes the escape the run stopped at and calls it again.
using Run32 = std::size_t (*)(const std::uint8_t* src, std::size_t m, std::uint32_t* out, std::uint32_t& last);

#ifdef XCCA_CBF_SIMD
#define XCCA_CBF_TARGET512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,bmi")))
#define XCCA_CBF_TARGET2 __attribute__((target("avx2,bmi")))
// GCC 12's intrinsic headers trip -Wmaybe-uninitialized inside target()-attributed functions (false positives).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Inclusive prefix sum of 16 int32 lanes: 4 lane shifts (valignd against zero) and adds.
XCCA_CBF_TARGET512 inline __m512i prefix16(__m512i v) noexcept {
    const __m512i z = _mm512_setzero_si512();
    v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, z, 15));
    v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, z, 14));
    v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, z, 12));
    return _mm512_add_epi32(v, _mm512_alignr_epi32(v, z, 8));
}

// AVX-512: 64 bytes tested per step; 16 deltas sign-extended, prefix-summed, offset by the running value
// (broadcast in `last`: its chain is one add per 16 pixels), stored. The run's end (an escape or m) is handled
// by masked loads and stores, so a run always ends exactly at the next escape.
// Mode 0 stores the values; 1 stores them and takes their (int32) max into *rmax; 2 stores max(out, value) and
// takes the max into *rmax (the thumbnail's strip fold, without a row buffer written and read back).
template <int Mode>
XCCA_CBF_TARGET512 inline std::size_t run512(const std::uint8_t* src, std::size_t m, std::uint32_t* out,
                                             std::uint32_t& last_io, std::int32_t* rmax) noexcept {
    const __m512i esc = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i i15 = _mm512_set1_epi32(15);
    __m512i last = _mm512_set1_epi32(static_cast<int>(last_io));
    __m512i mx = _mm512_set1_epi32(std::numeric_limits<std::int32_t>::min());
    std::size_t k = 0;
    for (; k + 64 <= m; k += 64) {
        const __m512i b = _mm512_loadu_si512(src + k);
        if (_mm512_cmpeq_epi8_mask(b, esc) != 0) break;
        for (int g = 0; g < 4; ++g) {
            const auto* p = reinterpret_cast<const __m128i*>(src + k + 16 * g);
            const __m512i v = prefix16(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)));
            const __m512i o = _mm512_add_epi32(v, last);
            std::uint32_t* d = out + k + 16 * g;
            if constexpr (Mode == 2) {
                _mm512_storeu_si512(d, _mm512_max_epi32(_mm512_loadu_si512(d), o));
            } else {
                _mm512_storeu_si512(d, o);
            }
            if constexpr (Mode != 0) mx = _mm512_max_epi32(mx, o);
            last = _mm512_add_epi32(last, _mm512_permutexvar_epi32(i15, v));
        }
    }
    // The last (partial) 64-byte block: up to the first escape or m.
    const std::size_t rem = std::min<std::size_t>(m - k, 64);
    const __mmask64 lm = rem == 64 ? ~__mmask64{0} : ((__mmask64{1} << rem) - 1);
    const __mmask64 e = _mm512_mask_cmpeq_epi8_mask(lm, _mm512_maskz_loadu_epi8(lm, src + k), esc);
    const std::size_t take = e != 0 ? static_cast<std::size_t>(__builtin_ctzll(e)) : rem;
    for (std::size_t g = 0; g < take; g += 16) {
        const std::size_t c = std::min<std::size_t>(take - g, 16);
        const __mmask16 cm = static_cast<__mmask16>(c == 16 ? 0xffffu : (1u << c) - 1);
        const __m512i v = prefix16(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(cm, src + k + g)));
        const __m512i o = _mm512_add_epi32(v, last);
        std::uint32_t* d = out + k + g;
        if constexpr (Mode == 2) {
            _mm512_mask_storeu_epi32(d, cm, _mm512_max_epi32(_mm512_maskz_loadu_epi32(cm, d), o));
        } else {
            _mm512_mask_storeu_epi32(d, cm, o);
        }
        if constexpr (Mode != 0) mx = _mm512_mask_max_epi32(mx, cm, mx, o);
        last = _mm512_permutexvar_epi32(_mm512_set1_epi32(static_cast<int>(c - 1)), o);
    }
    k += take;
    last_io = static_cast<std::uint32_t>(_mm512_cvtsi512_si32(last));
    if constexpr (Mode != 0) *rmax = std::max(*rmax, static_cast<std::int32_t>(_mm512_reduce_max_epi32(mx)));
    return k;
}

XCCA_CBF_TARGET512 std::size_t run32_avx512(const std::uint8_t* src, std::size_t m, std::uint32_t* out,
                                            std::uint32_t& last) noexcept {
    return run512<0>(src, m, out, last, nullptr);
}

XCCA_CBF_TARGET512 std::size_t fold32_avx512(const std::uint8_t* src, std::size_t m, std::int32_t* dst,
                                             std::uint32_t& last, bool first, std::int32_t& rmax) noexcept {
    auto* d = reinterpret_cast<std::uint32_t*>(dst);
    return first ? run512<1>(src, m, d, last, &rmax) : run512<2>(src, m, d, last, &rmax);
}

// Inclusive prefix sum of 8 int32 lanes: two in-lane byte shifts, then the low half's total into the high half.
XCCA_CBF_TARGET2 inline __m256i prefix8(__m256i v) noexcept {
    v = _mm256_add_epi32(v, _mm256_slli_si256(v, 4));
    v = _mm256_add_epi32(v, _mm256_slli_si256(v, 8));
    const __m256i t = _mm256_shuffle_epi32(v, 0xff);                     // lane 3 of each half
    return _mm256_add_epi32(v, _mm256_permute2x128_si256(t, t, 0x08));  // (0, low half's lane 3)
}

// 8 values of an AVX2 run (prefix sums v) offset by `last`, written as run512's Mode says.
template <int Mode>
XCCA_CBF_TARGET2 inline void emit256(std::uint32_t* out, __m256i v, __m256i& last, __m256i& mx, __m256i i7) noexcept {
    const __m256i o = _mm256_add_epi32(v, last);
    auto* d = reinterpret_cast<__m256i*>(out);
    if constexpr (Mode == 2) {
        _mm256_storeu_si256(d, _mm256_max_epi32(_mm256_loadu_si256(d), o));
    } else {
        _mm256_storeu_si256(d, o);
    }
    if constexpr (Mode != 0) mx = _mm256_max_epi32(mx, o);
    last = _mm256_add_epi32(last, _mm256_permutevar8x32_epi32(v, i7));
}

// AVX2: 32 bytes tested per step, 8 deltas per vector; the last < 8 bytes before the escape (or m) one by one.
// Modes as run512.
template <int Mode>
XCCA_CBF_TARGET2 inline std::size_t run256(const std::uint8_t* src, std::size_t m, std::uint32_t* out,
                                           std::uint32_t& last_io, std::int32_t* rmax) noexcept {
    const __m256i esc = _mm256_set1_epi8(static_cast<char>(0x80));
    const __m256i i7 = _mm256_set1_epi32(7);
    __m256i last = _mm256_set1_epi32(static_cast<int>(last_io));
    __m256i mx = _mm256_set1_epi32(std::numeric_limits<std::int32_t>::min());
    std::size_t k = 0;
    std::size_t limit = m;
    for (; k + 32 <= m; k += 32) {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k));
        const unsigned e = static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, esc)));
        if (e != 0) {
            limit = k + static_cast<std::size_t>(__builtin_ctz(e));
            break;
        }
        for (int g = 0; g < 4; ++g) {
            const auto* p = reinterpret_cast<const __m128i*>(src + k + 8 * g);
            emit256<Mode>(out + k + 8 * g, prefix8(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p))), last, mx, i7);
        }
    }
    if (limit == m) {  // fewer than 32 bytes left before m: look for an escape in the whole 8-byte groups
        for (std::size_t x = k; x < m; ++x)
            if (src[x] == 0x80) {
                limit = x;
                break;
            }
    }
    for (; k + 8 <= limit; k += 8)
        emit256<Mode>(out + k, prefix8(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + k)))),
                      last, mx, i7);
    std::uint32_t l = static_cast<std::uint32_t>(_mm_cvtsi128_si32(_mm256_castsi256_si128(last)));
    std::int32_t r = std::numeric_limits<std::int32_t>::min();
    for (; k < limit; ++k) {  // the < 8 bytes before the escape: the run still ends exactly there
        l += static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<std::int8_t>(src[k])));
        const auto v = static_cast<std::int32_t>(l);
        if constexpr (Mode == 2) {
            out[k] = static_cast<std::uint32_t>(std::max(static_cast<std::int32_t>(out[k]), v));
        } else {
            out[k] = l;
        }
        r = std::max(r, v);
    }
    last_io = l;
    if constexpr (Mode != 0) {
        alignas(32) std::int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), mx);
        for (std::int32_t x : lanes) r = std::max(r, x);
        *rmax = std::max(*rmax, r);
    }
    return k;
}

XCCA_CBF_TARGET2 std::size_t run32_avx2(const std::uint8_t* src, std::size_t m, std::uint32_t* out,
                                        std::uint32_t& last) noexcept {
    return run256<0>(src, m, out, last, nullptr);
}

XCCA_CBF_TARGET2 std::size_t fold32_avx2(const std::uint8_t* src, std::size_t m, std::int32_t* dst,
                                         std::uint32_t& last, bool first, std::int32_t& rmax) noexcept {
    auto* d = reinterpret_cast<std::uint32_t*>(dst);
    return first ? run256<1>(src, m, d, last, &rmax) : run256<2>(src, m, d, last, &rmax);
}
#pragma GCC diagnostic pop
#endif

// The run decoder for this CPU, or null (the scalar loop alone). XCCA_DISABLE_AVX512 / XCCA_DISABLE_AVX2 (see
// cpu_features.hpp) force the narrower paths.
#ifdef XCCA_CBF_SIMD
// Which SIMD run decoders this CPU can take (0: none, 1: AVX2, 2: AVX-512); one test for both kinds of run loop.
int cbf_simd_level() noexcept {
    if (detail::cpu_has_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("bmi")) return 2;
    if (detail::cpu_has_avx2() && __builtin_cpu_supports("bmi")) return 1;
    return 0;
}
#endif

Run32 pick_run32() noexcept {
#ifdef XCCA_CBF_SIMD
    switch (cbf_simd_level()) {
        case 2: return run32_avx512;
        case 1: return run32_avx2;
        default: break;
    }
#endif
    return nullptr;
}

// The folding run decoder of the thumbnail's strip sink (BinMaxSink): first = the strip's first row (values stored),
// else max(dst, value) stored; the values' max goes into rmax (the row's validity).
using Fold32 = std::size_t (*)(const std::uint8_t* src, std::size_t m, std::int32_t* dst, std::uint32_t& last,
                               bool first, std::int32_t& rmax);

Fold32 pick_fold32() noexcept {
#ifdef XCCA_CBF_SIMD
    switch (cbf_simd_level()) {
        case 2: return fold32_avx512;
        case 1: return fold32_avx2;
        default: break;
    }
#endif
    return nullptr;
}

// Wide: 64-bit escapes and int64 sums (fabio's dec_cbf); else 32-bit escapes and int32 sums (dec_cbf32).
// Sums are done in unsigned arithmetic: wrapping is then defined, as in fabio's C loops in practice.
// The one decoder loop of this file, for every sink (the sink only decides where the values go).
template <class T, bool Wide, class Sink>
CbfStatus decode_impl(const std::uint8_t* src, std::size_t n, std::size_t nv, Sink& sink, std::size_t& used,
                      std::size_t& written) noexcept {
    using Acc = std::conditional_t<Wide, std::uint64_t, std::uint32_t>;
    constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    Acc last = 0;
    std::size_t i = 0, done = 0;
    CbfStatus status = CbfStatus::ok;
    // 32-bit pixels with 32-bit sums: escape-free runs go to the SIMD run decoder (identical values). A folding
    // sink (Sink::folds) takes every value through put() and its runs through its own run().
    constexpr bool run_ok = sizeof(T) == 4 && !Wide;
    static const Run32 run = run_ok && !Sink::folds ? pick_run32() : nullptr;
    while (done < nv && status == CbfStatus::ok) {
        const std::size_t len = std::min(sink.chunk_size(), nv - done);
        T* out = sink.chunk(done);
        std::size_t j = 0;
        bool direct = false;  // the sink folds the values itself (else they are stored into the chunk)
        if constexpr (Sink::folds) direct = sink.direct();
        const auto put = [&](std::size_t x, Acc v) {
            if constexpr (Sink::folds) {
                if (direct) {
                    sink.put(x, static_cast<std::int32_t>(v));
                    return;
                }
            }
            out[x] = static_cast<T>(v);
        };
        while (j < len) {
            if constexpr (run_ok) {
                // Not at an escape byte (a run of escapes stays in the scalar loop, no call per value).
                if ((Sink::folds ? direct : run != nullptr) && i < n && src[i] != 0x80) {
                    std::size_t k = 0;
                    if constexpr (Sink::folds) {
                        k = sink.run(src + i, std::min(n - i, len - j), j, last);
                    } else {
                        k = run(src + i, std::min(n - i, len - j), reinterpret_cast<std::uint32_t*>(out + j), last);
                    }
                    i += k;
                    j += k;
                    if (j == len) break;
                }
            }
            // Fast path: 8 bytes without the escape byte 0x80 are 8 one-byte deltas.
            if (i + 8 <= n && j + 8 <= len) {
                std::uint64_t w;
                std::memcpy(&w, src + i, 8);
                const std::uint64_t z = w ^ highs;  // a 0x80 byte becomes 0
                if (((z - ones) & ~z & highs) == 0) {
                    for (int k = 0; k < 8; ++k) {
                        last += static_cast<Acc>(static_cast<std::int64_t>(static_cast<std::int8_t>(src[i + k])));
                        put(j + k, last);
                    }
                    i += 8;
                    j += 8;
                    continue;
                }
            }
            if (i >= n) {
                status = CbfStatus::too_few_values;
                break;
            }
            const std::uint8_t b = src[i];
            if (b != 0x80) {
                last += static_cast<Acc>(static_cast<std::int64_t>(static_cast<std::int8_t>(b)));
                i += 1;
            } else {
                if (n - i < 3) {
                    status = CbfStatus::truncated_escape;
                    break;
                }
                const auto d16 = static_cast<std::int16_t>(static_cast<std::uint16_t>(src[i + 1] | src[i + 2] << 8));
                if (d16 != INT16_MIN) {
                    last += static_cast<Acc>(static_cast<std::int64_t>(d16));
                    i += 3;
                } else {
                    if (n - i < 7) {
                        status = CbfStatus::truncated_escape;
                        break;
                    }
                    const auto d32 = static_cast<std::int32_t>(load_le32(src + i + 3));
                    if (!Wide || d32 != INT32_MIN) {
                        last += static_cast<Acc>(static_cast<std::int64_t>(d32));
                        i += 7;
                    } else {
                        if (n - i < 15) {
                            status = CbfStatus::truncated_escape;
                            break;
                        }
                        const std::uint64_t d64 = static_cast<std::uint64_t>(load_le32(src + i + 7)) |
                                                  static_cast<std::uint64_t>(load_le32(src + i + 11)) << 32;
                        last += static_cast<Acc>(d64);
                        i += 15;
                    }
                }
            }
            put(j++, last);
        }
        done += j;
        if (status == CbfStatus::ok) sink.flush(out, len);
    }
    if (status == CbfStatus::ok && i < n) status = CbfStatus::trailing_bytes;
    used = i;
    written = done;
    return status;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(XCCA_NO_CLONES)
// Portable wheels: an AVX2 clone of the row folds (vpmaxsd on 8 pixels; SSE2 has no int32 max) chosen at load time.
#define XCCA_CBF_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define XCCA_CBF_CLONES
#endif

// s[x] = max(s[x], r[x]) for x < n (unless r is s); returns whether r[0, n) has a valid pixel (>= 0), i.e. its
// max is >= 0: the row max is taken in the same vector loop (a scalar search for the first valid pixel cost a
// quarter of this function: gap rows are read to their end).
XCCA_CBF_CLONES bool fold_row(const std::int32_t* r, std::int32_t* s, std::size_t n) noexcept {
    std::int32_t m = std::numeric_limits<std::int32_t>::min();
    if (r != s) {
        for (std::size_t x = 0; x < n; ++x) {
            s[x] = std::max(s[x], r[x]);
            m = std::max(m, r[x]);
        }
    } else {
        for (std::size_t x = 0; x < n; ++x) m = std::max(m, r[x]);
    }
    return m >= 0;
}

// out[b] = max(s[b F, (b + 1) F)) over the n / F full blocks, F known at compile time (unrolled, no loop per block).
template <std::size_t F>
inline void block_max_fixed(const std::int32_t* s, std::size_t n, std::int32_t* out) noexcept {
    for (std::size_t b = 0, full = n / F; b < full; ++b, s += F) {
        std::int32_t m = s[0];
        for (std::size_t k = 1; k < F; ++k) m = std::max(m, s[k]);
        out[b] = m;
    }
}

// out[b] = max(s[b f, min(n, (b + 1) f))) (the last block may be partial); c[x] = max(c[x], s[x]).
XCCA_CBF_CLONES void fold_strip(const std::int32_t* s, std::size_t n, std::size_t f, std::int32_t* out,
                                std::int32_t* c) noexcept {
    std::size_t done = n - n % f;  // pixels in the full blocks
    switch (f) {  // the factors of 300-1000 px thumbnails of 0.5-16 Mpixel detectors
#define XCCA_CBF_CASE(F) \
    case F: block_max_fixed<F>(s, n, out); break;
        XCCA_CBF_CASE(1) XCCA_CBF_CASE(2) XCCA_CBF_CASE(3) XCCA_CBF_CASE(4) XCCA_CBF_CASE(5) XCCA_CBF_CASE(6)
        XCCA_CBF_CASE(7) XCCA_CBF_CASE(8) XCCA_CBF_CASE(9) XCCA_CBF_CASE(10) XCCA_CBF_CASE(11) XCCA_CBF_CASE(12)
        XCCA_CBF_CASE(13) XCCA_CBF_CASE(14) XCCA_CBF_CASE(15) XCCA_CBF_CASE(16)
#undef XCCA_CBF_CASE
        default:
            done = 0;  // one running max with a block counter: no short inner loop per block
    }
    std::int32_t* o = out + done / f;
    if (done < n) {
        std::int32_t b = s[done];
        std::size_t k = 1;
        for (std::size_t x = done + 1; x < n; ++x) {
            if (k == f) {
                *o++ = b;
                b = s[x];
                k = 1;
            } else {
                b = std::max(b, s[x]);
                ++k;
            }
        }
        *o = b;
    }
    for (std::size_t x = 0; x < n; ++x) c[x] = std::max(c[x], s[x]);
}

// The byte-offset strip sink of decode_byte_offset_bin_max: each decoded value goes straight into the strip's
// column maxima (stored for the first row of a strip, max-folded for the others; the SIMD runs fold 16 at a time)
// and into its row's max (the row's validity); every `factor` rows (and after the last row) the strip's maxima
// are reduced to one row of blocks and folded into the frame's column maxima (without SIMD runs: each row decoded
// into a row buffer, then folded by fold_row). The working set is a few rows, so it stays in cache; the frame is
// never stored. Valid = value >= 0, so a row (column) has a valid pixel exactly when
// its max is >= 0. (Folding as values are decoded, instead of decoding a row into a buffer and folding it
// afterwards, saves a store and a load per pixel: fold_row was 30 % of the kernel.)
struct BinMaxSink {
    static constexpr bool folds = true;
    std::size_t W, H, f, bw;
    std::int32_t* binned;
    std::uint8_t* empty_rows;
    std::vector<std::int32_t> row, strip, colmax;
    std::size_t y = 0;
    const Fold32 fold = pick_fold32();  // null: no SIMD, rows decoded into `row` and folded by fold_row
    bool first = true;                  // this row starts a strip: its values are stored, not max-folded
    // Max of this row's values; int64 so that the int32 stores of put() cannot alias it (it stays in a register).
    std::int64_t rmax = std::numeric_limits<std::int32_t>::min();

    BinMaxSink(std::size_t h, std::size_t w, std::size_t factor, std::int32_t* b, std::uint8_t* er)
        : W(w), H(h), f(factor), bw((w + factor - 1) / factor), binned(b), empty_rows(er), row(w), strip(w),
          colmax(w, std::numeric_limits<std::int32_t>::min()) {}

    std::size_t chunk_size() const noexcept { return W; }
    std::int32_t* chunk(std::size_t) noexcept {
        first = y % f == 0;
        rmax = std::numeric_limits<std::int32_t>::min();
        return first || fold != nullptr ? strip.data() : row.data();
    }
    bool direct() const noexcept { return fold != nullptr; }
    // With SIMD runs: the values the runs leave (escapes, tails) go straight into the strip too.
    void put(std::size_t x, std::int32_t v) noexcept {
        strip[x] = first ? v : std::max(strip[x], v);
        rmax = std::max<std::int64_t>(rmax, v);
    }
    std::size_t run(const std::uint8_t* s, std::size_t m, std::size_t x, std::uint32_t& last) noexcept {
        if (fold == nullptr) return 0;
        std::int32_t r = std::numeric_limits<std::int32_t>::min();
        const std::size_t k = fold(s, m, strip.data() + x, last, first, r);
        rmax = std::max<std::int64_t>(rmax, r);
        return k;
    }
    void flush(const std::int32_t*, std::size_t) noexcept {
        // A valid pixel is >= 0.
        empty_rows[y] = fold != nullptr ? rmax < 0 : !fold_row(first ? strip.data() : row.data(), strip.data(), W);
        if (y % f == f - 1 || y == H - 1) fold_strip(strip.data(), W, f, binned + (y / f) * bw, colmax.data());
        ++y;
    }
};

// Runs decode(bytes_used, values) -> status, with the MD5 of the input checked against `expected_md5` (if given)
// on a second thread while it runs (n_threads != 1 and a second core), else on this one afterwards.
template <class Decode>
CbfDecodeResult with_md5(const std::uint8_t* src, std::size_t n_bytes, const Md5Digest* expected_md5, int n_threads,
                         Decode&& decode) {
    CbfDecodeResult res;
    Md5Digest digest{};
    std::thread hasher;
    bool hashed = false;
    if (expected_md5 != nullptr && n_threads != 1 && resolve_threads(n_threads) >= 2) {
        try {
            hasher = std::thread([&digest, src, n_bytes] { digest = md5(src, n_bytes); });
        } catch (const std::system_error&) {  // no thread available: hash on this one afterwards
        }
    }
    res.status = decode(res.bytes_used, res.values);
    if (hasher.joinable()) {
        hasher.join();
        hashed = true;
    }
    if (expected_md5 != nullptr) {
        if (!hashed) digest = md5(src, n_bytes);
        res.md5_checked = true;
        res.digest = digest;
        if (digest != *expected_md5) res.status = CbfStatus::md5_mismatch;  // the data are corrupt: say so first
    }
    return res;
}

}  // namespace

template <class T>
CbfDecodeResult decode_byte_offset(const std::uint8_t* src, std::size_t n_bytes, T* out, std::size_t n_values,
                                   const Md5Digest* expected_md5, int n_threads) {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "integer pixels only");
    constexpr bool wide = !std::is_same_v<T, std::int32_t>;
    ArraySink<T> sink{out, n_values};
    return with_md5(src, n_bytes, expected_md5, n_threads, [&](std::size_t& used, std::size_t& values) {
        return decode_impl<T, wide>(src, n_bytes, n_values, sink, used, values);
    });
}

CbfDecodeResult decode_byte_offset_bin_max(const std::uint8_t* src, std::size_t n_bytes, std::size_t height,
                                           std::size_t width, std::size_t factor, std::int32_t* binned,
                                           std::uint8_t* empty_rows, std::uint8_t* empty_cols,
                                           const Md5Digest* expected_md5, int n_threads) {
    if (height == 0 || width == 0 || factor == 0)
        throw std::invalid_argument("decode_byte_offset_bin_max: height, width and factor must be positive");
    BinMaxSink sink(height, width, factor, binned, empty_rows);
    CbfDecodeResult res = with_md5(src, n_bytes, expected_md5, n_threads, [&](std::size_t& used, std::size_t& v) {
        return decode_impl<std::int32_t, false>(src, n_bytes, height * width, sink, used, v);
    });
    for (std::size_t x = 0; x < width; ++x) empty_cols[x] = sink.colmax[x] < 0;
    return res;
}

#define XCCA_CBF_INSTANTIATE(T)                                                                        \
    template CbfDecodeResult decode_byte_offset<T>(const std::uint8_t*, std::size_t, T*, std::size_t, \
                                                   const Md5Digest*, int);
XCCA_CBF_INSTANTIATE(std::int8_t)
XCCA_CBF_INSTANTIATE(std::uint8_t)
XCCA_CBF_INSTANTIATE(std::int16_t)
XCCA_CBF_INSTANTIATE(std::uint16_t)
XCCA_CBF_INSTANTIATE(std::int32_t)
XCCA_CBF_INSTANTIATE(std::uint32_t)
XCCA_CBF_INSTANTIATE(std::int64_t)
XCCA_CBF_INSTANTIATE(std::uint64_t)
#undef XCCA_CBF_INSTANTIATE

}  // namespace xcca
