// Run correlator kernels (see xcca/runcorr.hpp): batched real FFTs into harmonic-major chunk spectra, per-harmonic
// BLAS rank-k updates, lag-domain sums once per run, and the per-shot estimator.
#include "xcca/runcorr.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pocketfft_impl.hpp"
#include "runcorr_isa.hpp"
#include "runcorr_result.hpp"
#include "xcca/fft.hpp"
#include "xcca/threads.hpp"

#if defined(XCCA_HAVE_BLAS)
// A system BLAS (CMake FindBLAS): Fortran symbols with the hidden string-length arguments gfortran and flang pass.
extern "C" {
void zherk_(const char*, const char*, const int*, const int*, const double*, const std::complex<double>*,
            const int*, const double*, std::complex<double>*, const int*, std::size_t, std::size_t);
void cherk_(const char*, const char*, const int*, const int*, const float*, const std::complex<float>*, const int*,
            const float*, std::complex<float>*, const int*, std::size_t, std::size_t);
void zgemm_(const char*, const char*, const int*, const int*, const int*, const std::complex<double>*,
            const std::complex<double>*, const int*, const std::complex<double>*, const int*,
            const std::complex<double>*, std::complex<double>*, const int*, std::size_t, std::size_t);
void cgemm_(const char*, const char*, const int*, const int*, const int*, const std::complex<float>*,
            const std::complex<float>*, const int*, const std::complex<float>*, const int*,
            const std::complex<float>*, std::complex<float>*, const int*, std::size_t, std::size_t);
// OpenBLAS >= 0.3.27 only; weak, so other BLAS libraries link too.
int openblas_set_num_threads_local(int) __attribute__((weak));
}
#endif

namespace xcca::runcorr {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// BLAS selection
// ---------------------------------------------------------------------------------------------------------------

// Reference loops for builds without a BLAS (column-major; only the cases used here: herk uplo U or L trans N, gemm transa N transb C).
template <class C, class R>
void ref_herk(char* uplo, char*, int* n, int* k, R* alpha, C* a, int* lda, R* beta, C* c, int* ldc) {
    const bool lower = *uplo == 'L';
    for (int j = 0; j < *n; ++j)
        for (int i = lower ? j : 0; lower ? i < *n : i <= j; ++i) {
            C s{};
            for (int l = 0; l < *k; ++l) s += a[i + l * *lda] * std::conj(a[j + l * *lda]);
            C& d = c[i + j * *ldc];
            d = (*beta) * d + (*alpha) * s;
            if (i == j) d = C(d.real(), 0);
        }
}
template <class C>
void ref_gemm_nc(char*, char*, int* m, int* n, int* k, C* alpha, C* a, int* lda, C* b, int* ldb, C* beta, C* c,
                 int* ldc) {
    for (int j = 0; j < *n; ++j)
        for (int i = 0; i < *m; ++i) {
            C s{};
            for (int l = 0; l < *k; ++l) s += a[i + l * *lda] * std::conj(b[j + l * *ldb]);
            C& d = c[i + j * *ldc];
            d = (*beta) * d + (*alpha) * s;
        }
}

#if defined(XCCA_HAVE_BLAS)
void sys_zherk(char* u, char* t, int* n, int* k, double* al, std::complex<double>* a, int* lda, double* be,
               std::complex<double>* c, int* ldc) {
    zherk_(u, t, n, k, al, a, lda, be, c, ldc, 1, 1);
}
void sys_cherk(char* u, char* t, int* n, int* k, float* al, std::complex<float>* a, int* lda, float* be,
               std::complex<float>* c, int* ldc) {
    cherk_(u, t, n, k, al, a, lda, be, c, ldc, 1, 1);
}
void sys_zgemm(char* ta, char* tb, int* m, int* n, int* k, std::complex<double>* al, std::complex<double>* a,
               int* lda, std::complex<double>* b, int* ldb, std::complex<double>* be, std::complex<double>* c,
               int* ldc) {
    zgemm_(ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc, 1, 1);
}
void sys_cgemm(char* ta, char* tb, int* m, int* n, int* k, std::complex<float>* al, std::complex<float>* a,
               int* lda, std::complex<float>* b, int* ldb, std::complex<float>* be, std::complex<float>* c,
               int* ldc) {
    cgemm_(ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc, 1, 1);
}
#endif

Blas default_blas() {
    Blas b;
#if defined(XCCA_HAVE_BLAS)
    b.zherk = sys_zherk;
    b.cherk = sys_cherk;
    b.zgemm = sys_zgemm;
    b.cgemm = sys_cgemm;
    b.set_threads_local = openblas_set_num_threads_local ? &openblas_set_num_threads_local : nullptr;
    b.name = "system BLAS (linked)";
#else
    b.zherk = ref_herk<std::complex<double>, double>;
    b.cherk = ref_herk<std::complex<float>, float>;
    b.zgemm = ref_gemm_nc<std::complex<double>>;
    b.cgemm = ref_gemm_nc<std::complex<float>>;
    b.name = "builtin reference loops (no BLAS linked)";
#endif
    return b;
}

std::mutex& blas_mutex() {
    static std::mutex m;
    return m;
}
Blas& blas_state() {
    static Blas b = default_blas();
    return b;
}

/// Runs body(h0, h1) over the harmonics [0, nh) on xcca's threads, each BLAS call single-threaded; without a
/// thread-local control the BLAS runs on the calling thread only (it may thread itself).
template <class Body>
void over_harmonics(std::size_t nh, int n_threads, const Blas& b, Body&& body) {
    if (!b.set_threads_local) {
        body(std::size_t{0}, nh);
        return;
    }
    parallel_for(nh, n_threads, 4, [&](std::size_t h0, std::size_t h1) {
        const int prev = b.set_threads_local(1);
        try {
            body(h0, h1);
        } catch (...) {
            b.set_threads_local(prev);
            throw;
        }
        b.set_threads_local(prev);
    });
}

int as_int(std::size_t v, const char* what) {
    if (v > static_cast<std::size_t>(std::numeric_limits<int>::max()))
        throw std::invalid_argument(std::string("xcca::runcorr: ") + what + " too large for the BLAS (int)");
    return static_cast<int>(v);
}

// ---------------------------------------------------------------------------------------------------------------
// Spectra: rings transformed V at a time, one per SIMD lane (pocketfft's templated exec accepts vector types).
// ---------------------------------------------------------------------------------------------------------------
#if !defined(POCKETFFT_NO_VECTORS)
template <class T>
struct Lanes {
    static constexpr std::size_t V = pocketfft::detail::VLEN<T>::val;
    typedef T type __attribute__((vector_size(V * sizeof(T))));
};
#else
template <class T>
struct Lanes {
    static constexpr std::size_t V = 1;
    using type = T;
};
#endif
template <class Vt>
inline auto lane(const Vt& v, std::size_t i) {
    if constexpr (std::is_arithmetic<Vt>::value) {
        (void)i;
        return v;
    } else {
        return v[i];
    }
}

/// A vector of the lane type built lane by lane: Vt{f(0), f(1), ...} (one insert per lane, no branches).
template <class Vt, class F, std::size_t... L>
inline Vt make_lanes(F&& f, std::index_sequence<L...>) {
    return Vt{f(L)...};
}

/// Lane vectors of T and of the same-width signed integers (lane masks); V = 1 is a one-lane vector (also when
/// pocketfft's lanes are plain scalars).
template <class T, std::size_t V>
struct LaneTypes {
    using I = std::conditional_t<sizeof(T) == 8, std::int64_t, std::int32_t>;
    typedef T Fv __attribute__((vector_size(V * sizeof(T))));
    typedef I Iv __attribute__((vector_size(V * sizeof(T))));
};

/// One group of V rings of a column: rows, masks and how many lanes are real (the others repeat the last ring).
template <class T, std::size_t V>
struct Group {
    const T* src[V];
    const T* src2[V];
    const std::uint8_t* m1[V];
    const std::uint8_t* m2[V];
    std::size_t nl;
};

/// Fills one group's lanes in one pass over the ring samples: buf[k] = the V data rings' m a (m1 & m2 with `Diff`,
/// data = rings[s] - rings[t]), and mbuf[(s * n + k)] for the V / Vm float64 mask sub-groups (1 where valid, else
/// 0). Invalid samples are zeroed by masking their bits (exactly the select "valid ? v : 0", NaN included), and the
/// non-finite samples under a valid mask are counted per lane. Returns that count over the first nl lanes.
/// With V <= 8 the lanes' validity is first packed into one byte per sample (a loop over contiguous mask bytes the
/// compiler vectorises), which then selects the lane masks from small tables instead of V compares per sample.
template <bool HasMask, bool Diff, bool Data, bool Mask, class T, std::size_t V, std::size_t Vm, class Vt, class Vd>
std::size_t fill_group(const Group<T, V>& g, std::size_t n, Vt* buf, Vd* mbuf, std::uint8_t* bits8) {
    using LT = LaneTypes<T, V>;
    using LD = LaneTypes<double, Vm>;
    using Fv = typename LT::Fv;
    using Iv = typename LT::Iv;
    using Im = typename LD::Iv;
    using I = typename LT::I;
    static_assert(sizeof(Vt) == sizeof(Iv) && sizeof(Vd) == sizeof(Im), "lane types");
    constexpr std::size_t S = V / Vm;  // mask sub-groups per data group
    static_assert(S * Vm == V, "V must be a multiple of Vm");
    constexpr bool Packed = HasMask && V <= 8;
    const auto seq = std::make_index_sequence<V>{};
    const auto mseq = std::make_index_sequence<Vm>{};
    std::int64_t one_bits;
    {
        const double one = 1.0;
        std::memcpy(&one_bits, &one, sizeof one_bits);
    }
    const Im onev = make_lanes<Im>([&](std::size_t) { return one_bits; }, mseq);
    // Tables indexed by the packed validity byte: lane l valid <=> bit l.
    constexpr std::size_t NT = Packed ? (std::size_t{1} << V) : 1, NM = Packed ? (std::size_t{1} << Vm) : 1;
    Iv vtab[NT];
    Im mtab[NM];
    if constexpr (Packed) {
        for (std::size_t x = 0; x < NT; ++x)
            vtab[x] = make_lanes<Iv>([&](std::size_t l) { return static_cast<I>((x >> l) & 1 ? -1 : 0); }, seq);
        for (std::size_t x = 0; x < NM; ++x)
            mtab[x] = make_lanes<Im>([&](std::size_t l) { return (x >> l) & 1 ? one_bits : std::int64_t{0}; }, mseq);
        std::memset(bits8, 0, n);
        for (std::size_t l = 0; l < V; ++l) {
            const std::uint8_t* a = g.m1[l];
            const std::uint8_t* b = g.m2[l];
            const std::uint8_t bit = static_cast<std::uint8_t>(1u << l);
            if constexpr (Diff) {
                for (std::size_t k = 0; k < n; ++k) bits8[k] |= (a[k] != 0 && b[k] != 0) ? bit : 0;
            } else {
                for (std::size_t k = 0; k < n; ++k) bits8[k] |= a[k] != 0 ? bit : 0;
            }
        }
    }
    auto valid_of = [&](std::size_t k) -> Iv {
        if constexpr (Packed) {
            return vtab[bits8[k]];
        } else {
            Iv valid = make_lanes<Iv>([&](std::size_t l) { return static_cast<I>(g.m1[l][k]); }, seq) != 0;
            if constexpr (Diff)
                valid &= make_lanes<Iv>([&](std::size_t l) { return static_cast<I>(g.m2[l][k]); }, seq) != 0;
            return valid;
        }
    };
    Iv badv{};
    for (std::size_t k = 0; k < n; ++k) {
        if constexpr (Data) {
            Fv v = make_lanes<Fv>([&](std::size_t l) { return g.src[l][k]; }, seq);
            if constexpr (Diff) v = v - make_lanes<Fv>([&](std::size_t l) { return g.src2[l][k]; }, seq);
            const Fv z = v - v;  // +0 where finite, NaN where Inf or NaN
            const Iv nonfinite = z != z;
            Iv bits;
            std::memcpy(&bits, &v, sizeof bits);
            if constexpr (HasMask) {
                const Iv valid = valid_of(k);
                badv -= nonfinite & valid;
                bits &= valid;
            } else {
                badv -= nonfinite;
            }
            std::memcpy(&buf[k], &bits, sizeof bits);
        }
        if constexpr (Mask) {
            for (std::size_t s = 0; s < S; ++s) {
                Im mv = onev;
                if constexpr (Packed) {
                    mv = mtab[(bits8[k] >> (s * Vm)) & (NM - 1)];
                } else if constexpr (HasMask) {
                    Im valid = make_lanes<Im>([&](std::size_t l) { return static_cast<std::int64_t>(g.m1[s * Vm + l][k]); },
                                              mseq) != 0;
                    if constexpr (Diff)
                        valid &= make_lanes<Im>(
                                     [&](std::size_t l) { return static_cast<std::int64_t>(g.m2[s * Vm + l][k]); },
                                     mseq) != 0;
                    mv &= valid;
                }
                std::memcpy(&mbuf[s * n + k], &mv, sizeof mv);
            }
        }
    }
    std::size_t bad = 0;
    if constexpr (Data)
        for (std::size_t l = 0; l < g.nl; ++l) bad += static_cast<std::size_t>(badv[l]);
    return bad;
}

/// Calls f with four std::bool_constant arguments equal to the runtime flags (one instantiation per combination).
template <class F>
auto with_flags(bool a, bool b, bool c, bool d, F&& f) {
    auto b3 = [&](auto x, auto y, auto z) {
        return d ? f(x, y, z, std::true_type{}) : f(x, y, z, std::false_type{});
    };
    auto b2 = [&](auto x, auto y) { return c ? b3(x, y, std::true_type{}) : b3(x, y, std::false_type{}); };
    auto b1 = [&](auto x) { return b ? b2(x, std::true_type{}) : b2(x, std::false_type{}); };
    return a ? b1(std::true_type{}) : b1(std::false_type{});
}

/// Writes a tile's transformed lanes (groups of V rings, halfcomplex, n apart in buf) to out[(h * K + c) * nqu + i0 +
/// r] for its first nt rings, harmonic by harmonic: nt contiguous values per harmonic, straight from the lanes.
template <std::size_t V, class Vx, class C>
void store_tile(const Vx* buf, std::size_t n, std::size_t nt, std::size_t K, std::size_t c, std::size_t nqu,
                std::size_t i0, C* out) {
    using CR = typename C::value_type;
    const std::size_t nh = n / 2 + 1, ng = (nt + V - 1) / V;
    auto real_row = [&](std::size_t h, std::size_t re) {
        C* o = out + (h * K + c) * nqu + i0;
        for (std::size_t r = 0; r < nt; ++r) o[r] = C(static_cast<CR>(lane(buf[(r / V) * n + re], r % V)), CR(0));
    };
    real_row(0, 0);
    // Each harmonic's stores go to lines of their own (K * nqu values apart), each fetched before it is written:
    // prefetching harmonic h + D's lines into L2 keeps many fetches in flight (measured: a quarter less CPU time for
    // 64 shots x 100 rings x 3600; shorter distances or L1 prefetches gained less).
    constexpr std::size_t D = 64;
    const std::size_t bytes = nt * sizeof(C);
    for (std::size_t h = 1; 2 * h < n; ++h) {
        C* o = out + (h * K + c) * nqu + i0;
        if (h + D < nh) {
            const char* p = reinterpret_cast<const char*>(o + D * K * nqu);
            for (std::size_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 1, 2);
            __builtin_prefetch(p + bytes - 1, 1, 2);
        }
        if (nt == ng * V) {
            for (std::size_t g = 0; g < ng; ++g) {
                const Vx re = buf[g * n + 2 * h - 1], im = buf[g * n + 2 * h];
                for (std::size_t l = 0; l < V; ++l)
                    o[g * V + l] = C(static_cast<CR>(lane(re, l)), static_cast<CR>(lane(im, l)));
            }
        } else {
            for (std::size_t r = 0; r < nt; ++r)
                o[r] = C(static_cast<CR>(lane(buf[(r / V) * n + 2 * h - 1], r % V)),
                         static_cast<CR>(lane(buf[(r / V) * n + 2 * h], r % V)));
        }
    }
    if (n % 2 == 0 && n > 1) real_row(nh - 1, n - 1);
}

}  // namespace

void set_blas(const Blas& b) {
    if (!b.zherk || !b.cherk || !b.zgemm || !b.cgemm)
        throw std::invalid_argument("xcca::runcorr::set_blas: zherk, cherk, zgemm and cgemm must all be given");
    std::lock_guard<std::mutex> lock(blas_mutex());
    blas_state() = b;
}
void reset_blas() {
    std::lock_guard<std::mutex> lock(blas_mutex());
    blas_state() = default_blas();
}
Blas current_blas() {
    std::lock_guard<std::mutex> lock(blas_mutex());
    return blas_state();
}

template <class T>
std::size_t spectra(const SpecJob<T>& j, int n_threads) {
    const std::size_t n = j.n, K = j.K, nqu = j.nqu;
    if (n == 0) throw std::invalid_argument("xcca::runcorr::spectra: ring length must be >= 1");
    if (K == 0 || nqu == 0) return 0;
    if (!j.units || !j.qsel) throw std::invalid_argument("xcca::runcorr::spectra: null units or qsel");
    if (j.spec && !j.data) throw std::invalid_argument("xcca::runcorr::spectra: data spectra need ring data");
    if (j.mask) {
        const std::size_t m = j.n_mask_rows;
        if (!(m == 1 || m == j.nq || m == j.n_shots * j.nq))
            throw std::invalid_argument("xcca::runcorr::spectra: n_mask_rows must be 1, nq or n_shots * nq");
    }
    const std::size_t nu = j.diff ? 2 * K : K;
    for (std::size_t i = 0; i < nu; ++i)
        if (j.units[i] < 0 || static_cast<std::size_t>(j.units[i]) >= j.n_shots)
            throw std::out_of_range("xcca::runcorr::spectra: shot index " + std::to_string(j.units[i]) +
                                    " out of range");
    for (std::size_t i = 0; i < nqu; ++i)
        if (j.qsel[i] < 0 || static_cast<std::size_t>(j.qsel[i]) >= j.nq)
            throw std::out_of_range("xcca::runcorr::spectra: ring index out of range");

    using Vt = typename Lanes<T>::type;
    using Vd = typename Lanes<double>::type;
    constexpr std::size_t V = Lanes<T>::V, Vm = Lanes<double>::V;
    // Rings per tile: 8 (at least V), so that each harmonic's store is whole cache lines of one tile's lanes.
    constexpr std::size_t TR = V > 8 ? V : 8, GT = TR / V, S = V / Vm;
    static_assert(TR % V == 0 && S * Vm == V, "lane counts");
    pocketfft::detail::pocketfft_r<T> plan(n);
    pocketfft::detail::pocketfft_r<double> mplan(n);
    std::mutex bad_mu;
    std::size_t bad_total = 0;
    auto mask_row = [&](std::size_t s, std::size_t q) -> const std::uint8_t* {
        return j.mask ? j.mask + ((s * j.nq + q) % j.n_mask_rows) * n : nullptr;
    };
    const bool has_mask = j.mask != nullptr, want_data = j.spec != nullptr, want_mask = j.mspec != nullptr;
    // One column (shot) per work item, its rings a tile of TR at a time: each group of V rings is filled (data and
    // mask lanes in one pass over the rows), transformed in place (V data lanes, V / Vm mask transforms of Vm float64
    // lanes), and the tile's lanes are written harmonic by harmonic straight into the chunk spectra.
    parallel_for(K, n_threads, 1, [&](std::size_t cb, std::size_t ce) {
        pocketfft::detail::arr<Vt> buf(want_data ? GT * n : 0);
        pocketfft::detail::arr<Vd> mbuf(want_mask ? GT * S * n : 0);
        std::vector<std::uint8_t> bits8(has_mask ? n : 0);
        std::size_t bad = 0;
        for (std::size_t c = cb; c < ce; ++c) {
            const std::size_t s = static_cast<std::size_t>(j.diff ? j.units[2 * c] : j.units[c]);
            const std::size_t t = j.diff ? static_cast<std::size_t>(j.units[2 * c + 1]) : 0;
            for (std::size_t i0 = 0; i0 < nqu; i0 += TR) {
                const std::size_t nt = std::min(TR, nqu - i0), ng = (nt + V - 1) / V;
                for (std::size_t g = 0; g < ng; ++g) {
                    Group<T, V> grp;
                    const std::size_t b0 = i0 + g * V;
                    grp.nl = std::min(V, nqu - b0);
                    for (std::size_t l = 0; l < V; ++l) {
                        // Lanes past the last ring repeat it (transformed, never stored or counted).
                        const std::size_t q = static_cast<std::size_t>(j.qsel[b0 + std::min(l, grp.nl - 1)]);
                        grp.src[l] = j.data ? j.data + (s * j.nq + q) * n : nullptr;
                        grp.src2[l] = (j.data && j.diff) ? j.data + (t * j.nq + q) * n : nullptr;
                        grp.m1[l] = mask_row(s, q);
                        grp.m2[l] = j.diff ? mask_row(t, q) : nullptr;
                    }
                    Vt* d = want_data ? buf.data() + g * n : nullptr;
                    Vd* md = want_mask ? mbuf.data() + g * S * n : nullptr;
                    bad += with_flags(has_mask, j.diff, want_data, want_mask, [&](auto hm, auto df, auto da, auto mk) {
                        return fill_group<decltype(hm)::value, decltype(df)::value, decltype(da)::value,
                                          decltype(mk)::value, T, V, Vm>(grp, n, d, md, bits8.data());
                    });
                    if (want_data) plan.exec(d, T(1), true);
                    if (want_mask)
                        for (std::size_t sg = 0; sg * Vm < grp.nl; ++sg) mplan.exec(md + sg * n, 1.0, true);
                }
                if (want_data) store_tile<V>(buf.data(), n, nt, K, c, nqu, i0, j.spec);
                if (want_mask) store_tile<Vm>(mbuf.data(), n, nt, K, c, nqu, i0, j.mspec);
            }
        }
        if (bad) {
            std::lock_guard<std::mutex> lock(bad_mu);
            bad_total += bad;
        }
    });
    return bad_total;
}

template <class T>
void herk_update(const std::complex<T>* spec, std::size_t nh, std::size_t K, std::size_t nqu, std::size_t c0,
                 std::size_t c1, double alpha, std::complex<T>* acc, int n_threads, char uplo, std::size_t ld,
                 std::size_t offset) {
    if (c1 > K || c0 > c1) throw std::invalid_argument("xcca::runcorr::herk_update: bad column range");
    if (uplo != 'U' && uplo != 'L') throw std::invalid_argument("xcca::runcorr::herk_update: uplo must be U or L");
    if (ld == 0) ld = nqu;
    if (ld < nqu) throw std::invalid_argument("xcca::runcorr::herk_update: ld < nqu");
    if (offset > ld - nqu) throw std::invalid_argument("xcca::runcorr::herk_update: offset > ld - nqu");
    if (c1 == c0 || nqu == 0 || nh == 0) return;
    const Blas b = current_blas();
    int n = as_int(nqu, "nqu"), k = as_int(c1 - c0, "columns"), lda = n, ldc = as_int(ld, "ld");
    as_int(K * nqu, "K * nqu");
    as_int(ld * nqu, "ld * nqu");
    char trans = 'N';
    T al = static_cast<T>(alpha), be = T(1);
    over_harmonics(nh, n_threads, b, [&](std::size_t h0, std::size_t h1) {
        for (std::size_t h = h0; h < h1; ++h) {
            auto* a = const_cast<std::complex<T>*>(spec + (h * K + c0) * nqu);
            std::complex<T>* c = acc + h * ld * nqu + offset;
            if constexpr (std::is_same<T, double>::value)
                b.zherk(&uplo, &trans, &n, &k, &al, a, &lda, &be, c, &ldc);
            else
                b.cherk(&uplo, &trans, &n, &k, &al, a, &lda, &be, c, &ldc);
        }
    });
}

template <class T>
void gemm_update(const std::complex<T>* spec_a, const std::complex<T>* spec_b, std::size_t nh, std::size_t K,
                 std::size_t nqu, std::size_t c0, std::size_t c1, double alpha, std::complex<T>* acc,
                 int n_threads) {
    if (c1 > K || c0 > c1) throw std::invalid_argument("xcca::runcorr::gemm_update: bad column range");
    if (c1 == c0 || nqu == 0 || nh == 0) return;
    const Blas b = current_blas();
    int n = as_int(nqu, "nqu"), k = as_int(c1 - c0, "columns"), ld = n;
    as_int(K * nqu, "K * nqu");
    char ta = 'N', tb = 'C';
    std::complex<T> al(static_cast<T>(alpha)), be(1);
    over_harmonics(nh, n_threads, b, [&](std::size_t h0, std::size_t h1) {
        for (std::size_t h = h0; h < h1; ++h) {
            auto* a = const_cast<std::complex<T>*>(spec_a + (h * K + c0) * nqu);
            auto* bb = const_cast<std::complex<T>*>(spec_b + (h * K + c0) * nqu);
            std::complex<T>* c = acc + h * nqu * nqu;
            if constexpr (std::is_same<T, double>::value)
                b.zgemm(&ta, &tb, &n, &n, &k, &al, a, &ld, bb, &ld, &be, c, &ld);
            else
                b.cgemm(&ta, &tb, &n, &n, &k, &al, a, &ld, bb, &ld, &be, c, &ld);
        }
    });
}

template <class T>
void lag_sums(const std::complex<T>* acc, std::size_t nh, std::size_t nqu, std::size_t n, bool upper,
              const std::int64_t* pairs, std::size_t P, double* out, int n_threads) {
    if (nh != n / 2 + 1) throw std::invalid_argument("xcca::runcorr::lag_sums: nh must be n / 2 + 1");
    for (std::size_t i = 0; i < 2 * P; ++i)
        if (pairs[i] < 0 || static_cast<std::size_t>(pairs[i]) >= nqu)
            throw std::out_of_range("xcca::runcorr::lag_sums: pair index out of range");
    // Pairs sorted by their accumulator offset and taken 64 at a time: for each harmonic a tile reads a short span
    // of the nqu x nqu matrix (instead of one cache line per pair and harmonic), then inverts pair by pair.
    const std::size_t m2 = nqu * nqu;
    std::vector<std::size_t> off(P), order(P);
    std::vector<char> cj(P);
    for (std::size_t p = 0; p < P; ++p) {
        const std::size_t a = static_cast<std::size_t>(pairs[2 * p]), b = static_cast<std::size_t>(pairs[2 * p + 1]);
        const bool direct = !upper || a <= b;  // acc(i, j) = sum A(i) conj(A(j)); G = conj(acc(a, b)) = acc(b, a)
        off[p] = direct ? a + b * nqu : b + a * nqu;
        cj[p] = direct;
        order[p] = p;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return off[x] < off[y]; });
    constexpr std::size_t TILE = 64;
    const std::size_t tiles = (P + TILE - 1) / TILE;
    const fft::RealPlan<double> plan(n);
    parallel_for(tiles, n_threads, 1, [&](std::size_t tb, std::size_t te) {
        std::vector<std::complex<double>> g(TILE * nh);
        for (std::size_t tl = tb; tl < te; ++tl) {
            const std::size_t p0 = tl * TILE, np_ = std::min(TILE, P - p0);
            for (std::size_t h = 0; h < nh; ++h) {
                const std::complex<T>* base = acc + h * m2;
                for (std::size_t t = 0; t < np_; ++t) {
                    const std::complex<T> v = base[off[order[p0 + t]]];
                    g[t * nh + h] = std::complex<double>(v.real(), v.imag());
                }
            }
            for (std::size_t t = 0; t < np_; ++t) {
                const std::size_t p = order[p0 + t];
                const std::complex<double>* gp = g.data() + t * nh;
                double* x = out + p * n;
                const double sg = cj[p] ? -1.0 : 1.0;
                x[0] = gp[0].real();
                for (std::size_t h = 1; 2 * h < n; ++h) {
                    x[2 * h - 1] = gp[h].real();
                    x[2 * h] = sg * gp[h].imag();
                }
                if (n % 2 == 0 && n > 1) x[n - 1] = gp[nh - 1].real();
                plan.backward(x, 1.0 / static_cast<double>(n));
            }
        }
    });
}


template <class T>
double pooled_result(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B, std::size_t nh,
                     std::size_t nqu, std::size_t n, bool upper, const std::int64_t* pairs, std::size_t P,
                     bool jackknife, double* corr, double* err, std::int64_t* counts, double* rep, int n_threads,
                     bool packed) {
    if (nh != n / 2 + 1) throw std::invalid_argument("xcca::runcorr::pooled_result: nh must be n / 2 + 1");
    if (packed && (!upper || !std::is_same<T, double>::value ||
                   static_cast<const void*>(num) != static_cast<const void*>(cnt)))
        throw std::invalid_argument("xcca::runcorr::pooled_result: packed needs upper, float64 and cnt == num");
    if (B == 0) throw std::invalid_argument("xcca::runcorr::pooled_result: need at least one block");
    if (!corr || !counts) throw std::invalid_argument("xcca::runcorr::pooled_result: corr and counts are required");
    for (std::size_t i = 0; i < 2 * P; ++i)
        if (pairs[i] < 0 || static_cast<std::size_t>(pairs[i]) >= nqu)
            throw std::out_of_range("xcca::runcorr::pooled_result: pair index out of range");
    if (P == 0) return 0.0;
    // Pairs in accumulator order (see lag_sums): the V pairs of a work item read neighbouring entries.
    // Packed (see the header): per harmonic one (nqu + 1) x nqu column-major block, numerator upper triangle at
    // offset 0, counts' lower triangle at offset 1; the count of (a, b), a <= b, is conj(L(b, a)), so G of the counts
    // is L(b, a) itself (sign +1), and for a > b it is conj(L(a, b)) (sign -1).
    const std::size_t ld = packed ? nqu + 1 : nqu;
    std::vector<std::size_t> off(P), order(P), offs(P), offc(P);
    std::vector<double> sg(P), sgs(P), sgc(P);
    for (std::size_t p = 0; p < P; ++p) {
        const std::size_t a = static_cast<std::size_t>(pairs[2 * p]), b = static_cast<std::size_t>(pairs[2 * p + 1]);
        const bool direct = !upper || a <= b;  // acc(i, j) = sum A(i) conj(A(j)); G = conj(acc(a, b)) = acc(b, a)
        off[p] = direct ? a + b * ld : b + a * ld;
        sg[p] = direct ? -1.0 : 1.0;
        order[p] = p;
    }
    std::vector<std::uint64_t> key;  // packed: band-major order (below); column runs share (band, column)
    if (packed) {
        // The counts of a group of V pairs (rows lo, lo + 1, ... of one column hi of the numerator) lie in V
        // different cache lines (one per row of the lower triangle), which the groups of the next columns hi + 1, ...
        // of the same band of 4 rows share: pairs sorted by (band, hi, lo), and the result pass gathers a tile of
        // consecutive groups together, harmonic by harmonic, so each of those lines is read once.
        key.resize(P);
        for (std::size_t p = 0; p < P; ++p) {
            const std::size_t a = static_cast<std::size_t>(pairs[2 * p]), b = static_cast<std::size_t>(pairs[2 * p + 1]);
            const std::size_t lo = std::min(a, b), hi = std::max(a, b);
            key[p] = (static_cast<std::uint64_t>(lo / 4) * nqu + hi) * nqu + lo;
        }
        std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return key[x] < key[y]; });
    } else {
        std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return off[x] < off[y]; });
    }
    for (std::size_t i = 0; i < P; ++i) {
        const std::size_t p = order[i];
        offs[i] = off[p];
        sgs[i] = sg[p];
        if (packed) {
            const std::size_t a = static_cast<std::size_t>(pairs[2 * p]), b = static_cast<std::size_t>(pairs[2 * p + 1]);
            const std::size_t lo = std::min(a, b), hi = std::max(a, b);
            offc[i] = 1 + hi + lo * ld;
            sgc[i] = -sg[p];
        } else {
            offc[i] = off[p];
            sgc[i] = sg[p];
        }
    }
    // AVX-512: 8 pairs per vector inverse FFT (half the transforms' time of AVX2's 4 at n = 3600; same bits).
    const bool avx512 = isa_avx512::available();
    const bool avx2 = !avx512 && isa_avx2::available();
    constexpr std::size_t Vb = Lanes<double>::V > 1 ? Lanes<double>::V : 2;
    const std::size_t V = avx512 ? 8 : avx2 ? 4 : Vb;
    // Groups of at most V sorted pairs (one per SIMD lane). Packed: a group never straddles two full column runs
    // (V or more pairs of one band and column: its numerator is one contiguous run and its counts are the lines the
    // tile shares); shorter runs (near the diagonal, subsets of pairs) fill groups in order.
    std::vector<std::size_t> gstart{0};
    for (std::size_t i = 0; i < P;) {
        std::size_t r = 1;  // length of the run starting at i
        if (packed)
            while (i + r < P && key[order[i + r]] / nqu == key[order[i]] / nqu) ++r;
        else
            r = P - i;
        const std::size_t e = i + r;
        if (packed && r >= V && gstart.back() != i) gstart.push_back(i);  // close the partial group before a full run
        for (; i < e; ++i)
            if (i - gstart.back() == V) gstart.push_back(i);
    }
    gstart.push_back(P);
    const std::size_t G = gstart.size() - 1;
    // Groups per work item: up to 4 (the band width), so that consecutive columns of a band share the packed counts'
    // lines, as long as the tile's lane buffers (2 B n vectors per group) stay in about half of a 2 MB L2 (with more,
    // the lag pass reads them back from memory): at n = 3600, 4 for blocks=1 and 2 for blocks=2 with AVX2's 4 lanes,
    // 2 and 1 with AVX-512's 8.
    std::size_t tile = 1;
    if (packed) {
        const std::size_t per_group = std::max<std::size_t>(2 * B * n * V * sizeof(double), 1);
        tile = std::max<std::size_t>(1, std::min<std::size_t>(4, (std::size_t{1} << 20) / per_group));
    }
    if (avx512)
        return isa_avx512::pooled_result(num, cnt, B, nh, nqu, n, ld, offs.data(), sgs.data(), offc.data(),
                                         sgc.data(), order.data(), P, gstart.data(), G, tile, jackknife, corr, err,
                                         counts, rep, n_threads);
    if (avx2)
        return isa_avx2::pooled_result(num, cnt, B, nh, nqu, n, ld, offs.data(), sgs.data(), offc.data(), sgc.data(),
                                       order.data(), P, gstart.data(), G, tile, jackknife, corr, err, counts, rep,
                                       n_threads);
    using Vd = typename detail::VecD<Vb>::type;
    return detail::pooled_result_lanes<T, Vb, pocketfft::detail::pocketfft_r<double>, pocketfft::detail::arr<Vd>>(
        num, cnt, B, nh, nqu, n, ld, offs.data(), sgs.data(), offc.data(), sgc.data(), order.data(), P,
        gstart.data(), G, tile, jackknife, corr, err, counts, rep, n_threads);
}

template <class T>
void per_shot_update(const std::complex<T>* spec, std::size_t K, const std::complex<double>* mspec,
                     std::size_t K_mask, std::size_t nh, std::size_t nqu, std::size_t n, std::size_t c0,
                     std::size_t c1, const std::int64_t* pairs, std::size_t P, double* sum, std::int64_t* nvalid,
                     std::int64_t* counts, int n_threads) {
    if (nh != n / 2 + 1) throw std::invalid_argument("xcca::runcorr::per_shot_update: nh must be n / 2 + 1");
    if (c1 > K || c0 > c1) throw std::invalid_argument("xcca::runcorr::per_shot_update: bad column range");
    if (!(K_mask == 1 || K_mask == K)) throw std::invalid_argument("xcca::runcorr::per_shot_update: K_mask");
    for (std::size_t i = 0; i < 2 * P; ++i)
        if (pairs[i] < 0 || static_cast<std::size_t>(pairs[i]) >= nqu)
            throw std::out_of_range("xcca::runcorr::per_shot_update: pair index out of range");
    const fft::RealPlan<double> plan(n);
    const bool per_col = K_mask == K && K > 1;
    parallel_for(P, n_threads, 4, [&](std::size_t b, std::size_t e) {
        std::vector<double> x(n), y(n);
        std::vector<std::int64_t> cnt(n);
        std::vector<std::complex<double>> g(nh);
        for (std::size_t p = b; p < e; ++p) {
            const std::size_t qa = static_cast<std::size_t>(pairs[2 * p]), qb = static_cast<std::size_t>(pairs[2 * p + 1]);
            auto counts_of = [&](std::size_t col) {
                // Products of the two rings' mask spectra for this column, inverted and rounded (exact: see
                // xcca.runcorr, the float64 error is far below 1/2 for any ring length in use).
                for (std::size_t h = 0; h < nh; ++h)
                    g[h] = std::conj(mspec[(h * K_mask + col) * nqu + qa]) * mspec[(h * K_mask + col) * nqu + qb];
                y[0] = g[0].real();
                for (std::size_t h = 1; 2 * h < n; ++h) {
                    y[2 * h - 1] = g[h].real();
                    y[2 * h] = g[h].imag();
                }
                if (n % 2 == 0 && n > 1) y[n - 1] = g[nh - 1].real();
                plan.backward(y.data(), 1.0 / static_cast<double>(n));
                for (std::size_t k = 0; k < n; ++k) cnt[k] = std::llround(y[k]);
            };
            if (!per_col) counts_of(0);
            for (std::size_t c = c0; c < c1; ++c) {
                if (per_col) counts_of(c);
                const std::complex<T>* A = spec + c * nqu;
                const std::size_t st = K * nqu;
                {
                    const std::complex<double> a0(A[qa].real(), A[qa].imag()), b0(A[qb].real(), A[qb].imag());
                    x[0] = (std::conj(a0) * b0).real();
                }
                for (std::size_t h = 1; 2 * h < n; ++h) {
                    const std::complex<double> a(A[h * st + qa].real(), A[h * st + qa].imag());
                    const std::complex<double> bb(A[h * st + qb].real(), A[h * st + qb].imag());
                    const std::complex<double> v = std::conj(a) * bb;
                    x[2 * h - 1] = v.real();
                    x[2 * h] = v.imag();
                }
                if (n % 2 == 0 && n > 1) {
                    const std::size_t h = nh - 1;
                    x[n - 1] = static_cast<double>(A[h * st + qa].real()) * static_cast<double>(A[h * st + qb].real());
                }
                plan.backward(x.data(), 1.0 / static_cast<double>(n));
                double* sp = sum + p * n;
                std::int64_t* nv = nvalid + p * n;
                std::int64_t* ct = counts + p * n;
                for (std::size_t k = 0; k < n; ++k) {
                    ct[k] += cnt[k];
                    if (cnt[k] > 0) {
                        sp[k] += x[k] / static_cast<double>(cnt[k]);
                        nv[k] += 1;
                    }
                }
            }
        }
    });
}

template std::size_t spectra<float>(const SpecJob<float>&, int);
template std::size_t spectra<double>(const SpecJob<double>&, int);
template void herk_update<float>(const std::complex<float>*, std::size_t, std::size_t, std::size_t, std::size_t,
                                 std::size_t, double, std::complex<float>*, int, char, std::size_t, std::size_t);
template void herk_update<double>(const std::complex<double>*, std::size_t, std::size_t, std::size_t, std::size_t,
                                  std::size_t, double, std::complex<double>*, int, char, std::size_t, std::size_t);
template void gemm_update<float>(const std::complex<float>*, const std::complex<float>*, std::size_t, std::size_t,
                                 std::size_t, std::size_t, std::size_t, double, std::complex<float>*, int);
template void gemm_update<double>(const std::complex<double>*, const std::complex<double>*, std::size_t,
                                  std::size_t, std::size_t, std::size_t, std::size_t, double, std::complex<double>*, int);
template void lag_sums<float>(const std::complex<float>*, std::size_t, std::size_t, std::size_t, bool,
                              const std::int64_t*, std::size_t, double*, int);
template void lag_sums<double>(const std::complex<double>*, std::size_t, std::size_t, std::size_t, bool,
                               const std::int64_t*, std::size_t, double*, int);
template double pooled_result<float>(const std::complex<float>*, const std::complex<double>*, std::size_t, std::size_t,
                                     std::size_t, std::size_t, bool, const std::int64_t*, std::size_t, bool, double*,
                                     double*, std::int64_t*, double*, int, bool);
template double pooled_result<double>(const std::complex<double>*, const std::complex<double>*, std::size_t,
                                      std::size_t, std::size_t, std::size_t, bool, const std::int64_t*, std::size_t,
                                      bool, double*, double*, std::int64_t*, double*, int, bool);
template void per_shot_update<float>(const std::complex<float>*, std::size_t, const std::complex<double>*,
                                     std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t,
                                     const std::int64_t*, std::size_t, double*, std::int64_t*, std::int64_t*, int);
template void per_shot_update<double>(const std::complex<double>*, std::size_t, const std::complex<double>*,
                                      std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t,
                                      const std::int64_t*, std::size_t, double*, std::int64_t*, std::int64_t*, int);

}  // namespace xcca::runcorr
