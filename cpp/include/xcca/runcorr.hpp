// The run correlator's kernels: accumulate C(q, q', Delta) over many shots in harmonic space.
//
// For shot s and ring q, A_s(q, h) = rfft_phi(m a) and M_s(q, h) = rfft_phi(m) (h = 0 .. n/2). Then
//   sum_s sum_j m a(q, j) m a(q', j + k) = irfft_h[ sum_s conj(A_s(q, h)) A_s(q', h) ](k)
// and the same with M for the mask-pair counts. For each harmonic h the sum over a chunk of shots is a Hermitian
// rank-k update of an nq x nq matrix (BLAS zherk / cherk), done once per chunk; the inverse transform and the
// division by the counts happen once per run (lag_sums). The kernels here are the parts a caller strings together
// (xcca.RunCorrelator does it in Python): spectra -> herk_update / gemm_update -> lag_sums, or spectra ->
// per_shot_update for the per-shot estimator.
//
// Layouts. A chunk's spectra are nh x K x nqu complex values, spec[(h * K + c) * nqu + i] for harmonic h, column c
// (one shot, or one shot pair) and selected ring i: for each harmonic a column-major nqu x K matrix, BLAS's "N"
// layout with lda = nqu. An accumulator is nh x nqu x nqu complex, acc[(h * nqu + j) * nqu + i] = element (i, j) of
// harmonic h (column-major, ldc = nqu), holding sum_c A_c(i, h) conj(A_c(j, h)); herk_update writes its upper
// triangle (i <= j) only.
//
// Packed layout (xcca.RunCorrelator's float64 accumulators: numerator and counts in one array, no wasted half):
// per harmonic an (nqu + 1) x nqu column-major block, leading dimension nqu + 1, blocks nqu * (nqu + 1) apart. The
// numerator's upper triangle (i <= j) is at i + j * (nqu + 1) (herk_update uplo 'U', offset 0); the counts' lower
// triangle L(i, j), i >= j, at 1 + i + j * (nqu + 1) (uplo 'L', offset 1). The two never overlap. The count
// accumulator of a pair (i <= j) is conj(L(j, i)) (equal to the upper-triangle value up to rounding, which the
// integer rounding of the lag-space counts removes).
//
// BLAS. The rank-k updates call a BLAS through function pointers with the Fortran calling convention as seen from C
// (scipy.linalg.cython_blas's signatures: every argument a pointer, no hidden string lengths). The C++-only build
// links a system BLAS when CMake finds one (XCCA_HAVE_BLAS) and uses it by default; otherwise plain reference loops
// (correct, slow: for builds without any BLAS). The Python module installs SciPy's own OpenBLAS (the library NumPy
// and SciPy ship) with set_blas. Each harmonic's update is one single-threaded BLAS call (OpenBLAS's
// openblas_set_num_threads_local(1) on each of xcca's threads), and the harmonics are spread over xcca's threads, so
// results are bit-identical for any thread count.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>

namespace xcca::runcorr {

using zherk_fn = void (*)(char* uplo, char* trans, int* n, int* k, double* alpha, std::complex<double>* a, int* lda,
                          double* beta, std::complex<double>* c, int* ldc);
using cherk_fn = void (*)(char* uplo, char* trans, int* n, int* k, float* alpha, std::complex<float>* a, int* lda,
                          float* beta, std::complex<float>* c, int* ldc);
using zgemm_fn = void (*)(char* transa, char* transb, int* m, int* n, int* k, std::complex<double>* alpha,
                          std::complex<double>* a, int* lda, std::complex<double>* b, int* ldb,
                          std::complex<double>* beta, std::complex<double>* c, int* ldc);
using cgemm_fn = void (*)(char* transa, char* transb, int* m, int* n, int* k, std::complex<float>* alpha,
                          std::complex<float>* a, int* lda, std::complex<float>* b, int* ldb,
                          std::complex<float>* beta, std::complex<float>* c, int* ldc);
/// OpenBLAS's openblas_set_num_threads_local: sets the calling thread's BLAS thread count, returns the previous one.
using threads_local_fn = int (*)(int);

/// The BLAS the kernels call. All four routines must be given together.
struct Blas {
    zherk_fn zherk = nullptr;
    cherk_fn cherk = nullptr;
    zgemm_fn zgemm = nullptr;
    cgemm_fn cgemm = nullptr;
    /// Optional. Without it the BLAS is called from one thread only (it may thread internally).
    threads_local_fn set_threads_local = nullptr;
    std::string name;
};

/// Installs `b` for all later calls (thread-safe; calls in flight keep the one they started with).
void set_blas(const Blas& b);
/// Back to the build's default: the linked system BLAS, or the reference loops ("builtin").
void reset_blas();
/// The BLAS in use.
Blas current_blas();

/// Work for spectra(): which shots (columns) and rings to transform.
template <class T>
struct SpecJob {
    const T* data = nullptr;  ///< rings, n_shots x nq x n, C-contiguous (null: mask spectra only)
    std::size_t n_shots = 0, nq = 0, n = 0;
    /// Optional mask (nonzero = valid): n_mask_rows x n with n_mask_rows 1, nq or n_shots * nq; ring (s, q) uses row
    /// (s * nq + q) % n_mask_rows (as xcca::correlate::Rings). Null: every sample valid.
    const std::uint8_t* mask = nullptr;
    std::size_t n_mask_rows = 0;
    /// K columns: shot indices, or with `diff` K pairs (i, j) (2 K entries), column = rings[i] - rings[j] with the
    /// mask m_i & m_j.
    const std::int64_t* units = nullptr;
    std::size_t K = 0;
    bool diff = false;
    const std::int64_t* qsel = nullptr;  ///< the nqu rings to transform (indices < nq)
    std::size_t nqu = 0;
    std::complex<T>* spec = nullptr;          ///< out: nh x K x nqu spectra of m a (null: skip)
    std::complex<double>* mspec = nullptr;    ///< out: nh x K x nqu spectra of m, float64 (null: skip)
};

/// Forward transforms of one chunk (see the layout above). Returns the number of non-finite samples under a valid
/// mask (callers reject such input: the FFT would spread them over every harmonic).
template <class T>
std::size_t spectra(const SpecJob<T>& job, int n_threads);

/// acc[h] (triangle `uplo`, 'U' or 'L') += alpha * sum_{c in [c0, c1)} spec[h][:, c] spec[h][:, c]^H for every
/// harmonic h. Harmonic h's matrix starts at acc + h * ld * nqu + offset with leading dimension ld (0: nqu; need
/// offset + nqu <= ld): ld = nqu + 1 with uplo 'U', offset 0 and uplo 'L', offset 1 fill the packed layout.
template <class T>
void herk_update(const std::complex<T>* spec, std::size_t nh, std::size_t K, std::size_t nqu, std::size_t c0,
                 std::size_t c1, double alpha, std::complex<T>* acc, int n_threads, char uplo = 'U',
                 std::size_t ld = 0, std::size_t offset = 0);

/// acc[h] (full matrix) += alpha * sum_{c in [c0, c1)} spec_a[h][:, c] spec_b[h][:, c]^H (the inter-shot term).
template <class T>
void gemm_update(const std::complex<T>* spec_a, const std::complex<T>* spec_b, std::size_t nh, std::size_t K,
                 std::size_t nqu, std::size_t c0, std::size_t c1, double alpha, std::complex<T>* acc,
                 int n_threads);

/// Lag-domain sums for the ring pairs (pairs[2 p], pairs[2 p + 1]) (indices into the accumulator's rings):
/// out[p * n + k] = sum_j x(q, j) y(q', j + k) = irfft(conj(G)) with G taken from acc (upper triangle when
/// `upper`, else the full matrix). Computed in float64.
template <class T>
void lag_sums(const std::complex<T>* acc, std::size_t nh, std::size_t nqu, std::size_t n, bool upper,
              const std::int64_t* pairs, std::size_t P, double* out, int n_threads);

/// The pooled estimator's results in one pass over the ring pairs (the lag sums of every block's numerator and
/// count accumulators, B = blocks, each nh x nqu x nqu as for lag_sums, blocks `nh * nqu * nqu` apart):
///   counts = sum_b rint(cnt_b), corr = sum_b num_b / counts (NaN where 0), rep[b] = (sum num - num_b) /
///   (counts - cnt_b) (leave-one-block-out, NaN where 0), err = sqrt((B - 1) / B * sum_b (rep_b - mean rep)^2) when
///   `jackknife` and B > 1, else NaN.
/// corr, err, counts: P x n; rep: B x P x n. err and rep may be null (not computed; err is then not computed
/// either when rep is null). One pass over groups of SIMD-lane pairs (8 with AVX-512, 4 with AVX2, when the CPU has
/// them): per block one vector inverse FFT of the numerator and one of the counts, then counts, ratio, replicates and
/// error in the same pass over the lags; bit-identical for any n_threads (and the same for AVX-512 and AVX2).
/// Returns the largest distance of a lag-space count from its integer (the caller checks it: exactness of the
/// counts).
/// `packed` (float64 only, with upper and cnt == num): both accumulators in one packed array (see Layouts).
template <class T>
double pooled_result(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B, std::size_t nh,
                     std::size_t nqu, std::size_t n, bool upper, const std::int64_t* pairs, std::size_t P,
                     bool jackknife, double* corr, double* err, std::int64_t* counts, double* rep, int n_threads,
                     bool packed = false);

/// Per-shot estimator: for each column c in [c0, c1) and pair p, num = lag sums of column c alone, cnt = its mask
/// pair counts (exact, rounded from the float64 mask spectra: column c of mspec when mask_per_column, else column 0
/// for every c); where cnt > 0: sum[p, k] += num / cnt, nvalid[p, k] += 1; counts[p, k] += cnt always.
template <class T>
void per_shot_update(const std::complex<T>* spec, std::size_t K, const std::complex<double>* mspec,
                     std::size_t K_mask, std::size_t nh, std::size_t nqu, std::size_t n, std::size_t c0,
                     std::size_t c1, const std::int64_t* pairs, std::size_t P, double* sum, std::int64_t* nvalid,
                     std::int64_t* counts, int n_threads);

extern template std::size_t spectra<float>(const SpecJob<float>&, int);
extern template std::size_t spectra<double>(const SpecJob<double>&, int);
extern template void herk_update<float>(const std::complex<float>*, std::size_t, std::size_t, std::size_t,
                                        std::size_t, std::size_t, double, std::complex<float>*, int, char,
                                        std::size_t, std::size_t);
extern template void herk_update<double>(const std::complex<double>*, std::size_t, std::size_t, std::size_t,
                                         std::size_t, std::size_t, double, std::complex<double>*, int, char,
                                         std::size_t, std::size_t);
extern template void gemm_update<float>(const std::complex<float>*, const std::complex<float>*, std::size_t,
                                        std::size_t, std::size_t, std::size_t, std::size_t, double, std::complex<float>*,
                                        int);
extern template void gemm_update<double>(const std::complex<double>*, const std::complex<double>*, std::size_t,
                                         std::size_t, std::size_t, std::size_t, std::size_t, double,
                                         std::complex<double>*, int);
extern template void lag_sums<float>(const std::complex<float>*, std::size_t, std::size_t, std::size_t, bool,
                                     const std::int64_t*, std::size_t, double*, int);
extern template void lag_sums<double>(const std::complex<double>*, std::size_t, std::size_t, std::size_t, bool,
                                      const std::int64_t*, std::size_t, double*, int);
extern template double pooled_result<float>(const std::complex<float>*, const std::complex<double>*, std::size_t,
                                            std::size_t, std::size_t, std::size_t, bool, const std::int64_t*,
                                            std::size_t, bool, double*, double*, std::int64_t*, double*, int, bool);
extern template double pooled_result<double>(const std::complex<double>*, const std::complex<double>*, std::size_t,
                                             std::size_t, std::size_t, std::size_t, bool, const std::int64_t*,
                                             std::size_t, bool, double*, double*, std::int64_t*, double*, int, bool);
extern template void per_shot_update<float>(const std::complex<float>*, std::size_t, const std::complex<double>*,
                                            std::size_t, std::size_t, std::size_t, std::size_t, std::size_t,
                                            std::size_t, const std::int64_t*, std::size_t, double*, std::int64_t*,
                                            std::int64_t*, int);
extern template void per_shot_update<double>(const std::complex<double>*, std::size_t, const std::complex<double>*,
                                             std::size_t, std::size_t, std::size_t, std::size_t, std::size_t,
                                             std::size_t, const std::int64_t*, std::size_t, double*,
                                             std::int64_t*, std::int64_t*, int);

}  // namespace xcca::runcorr
