// Angular (circular) auto- and cross-correlations of rings I(q, phi), exact with masks.
//
// Definition (pinned by issue 4): for rings a, b of length n with masks ma, mb (nonzero = valid),
//   C[k] = sum_j ma_j mb_{(j+k)%n} a_j b_{(j+k)%n} / sum_j ma_j mb_{(j+k)%n},   NaN where the denominator is 0;
// without a mask the denominator is n. Lag k <-> Delta = 2 pi k / n.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xcca::correlate {

/// Per-ring normalisation applied on top of the definition above.
///  - none: C as defined.
///  - mean: C / (mu_a mu_b), mu = mean of the ring over its own valid samples.
///  - std:  rings have their masked mean subtracted first (valid samples only), then C / (sigma_a sigma_b),
///          sigma^2 = masked population variance of the ring (so an autocorrelation is 1 at lag 0).
enum class Normalize { none, mean, std_ };

/// A stack of rings: data is n_shots x nq x n, C-contiguous. The optional mask (nonzero = valid) has
/// n_mask_rows x n entries, n_mask_rows being 1 (one mask for every ring), nq (one per q, shared by all shots) or
/// n_shots * nq (one per ring); ring (s, q) uses mask row (s * nq + q) % n_mask_rows.
template <class T>
struct Rings {
    const T* data = nullptr;
    std::size_t n_shots = 0, nq = 0, n = 0;
    const std::uint8_t* mask = nullptr;
    std::size_t n_mask_rows = 0;
};

struct Options {
    Normalize normalize = Normalize::none;
    /// Return mean over shots (or shot pairs) instead of one result each; extra memory O(threads * rows * n).
    bool average = false;
    /// Raw circular sums (no division by the pair count); only valid without a mask and with Normalize::none.
    bool raw_sums = false;
    int n_threads = 0;  ///< 0 = all usable cores
};

/// Autocorrelation of every ring. out: (average ? 1 : n_shots) x nq x n.
template <class T>
void autocorrelate(const Rings<T>& rings, T* out, const Options& opt);

/// Cross-correlation C(q, q', k) = sum_j a_j b_{j+k} / count for q_pairs[2 i] = q, q_pairs[2 i + 1] = q'.
/// out: (average ? 1 : n_shots) x n_pairs x n.
template <class T>
void cross_correlate(const Rings<T>& rings, const std::size_t* q_pairs, std::size_t n_pairs, T* out,
                     const Options& opt);

/// Difference correlations: for each shot pair (i, j) = (shot_pairs[2 p], shot_pairs[2 p + 1]) the rings
/// rings[i] - rings[j] with the combined mask m_i & m_j are correlated: autocorrelations if q_pairs is null
/// (nq output rows), otherwise cross-correlations for the n_q_pairs q pairs.
/// out: (average ? 1 : n_shot_pairs) x (q_pairs ? n_q_pairs : nq) x n.
template <class T>
void difference_correlate(const Rings<T>& rings, const std::size_t* shot_pairs, std::size_t n_shot_pairs,
                          const std::size_t* q_pairs, std::size_t n_q_pairs, T* out, const Options& opt);

/// Exact mask pair counts out[k] = sum_j ma_j mb_{(j+k)%n} (nonzero = valid). Uses run lengths
/// (O(runs_a * runs_b + n), integer arithmetic) when the masks have few runs, otherwise a float64 FFT rounded to
/// the nearest integer (exact: the counts are at most n).
void mask_pair_counts(const std::uint8_t* ma, const std::uint8_t* mb, std::size_t n, std::int64_t* out);

extern template void autocorrelate<float>(const Rings<float>&, float*, const Options&);
extern template void autocorrelate<double>(const Rings<double>&, double*, const Options&);
extern template void cross_correlate<float>(const Rings<float>&, const std::size_t*, std::size_t, float*,
                                            const Options&);
extern template void cross_correlate<double>(const Rings<double>&, const std::size_t*, std::size_t, double*,
                                             const Options&);
extern template void difference_correlate<float>(const Rings<float>&, const std::size_t*, std::size_t,
                                                 const std::size_t*, std::size_t, float*, const Options&);
extern template void difference_correlate<double>(const Rings<double>&, const std::size_t*, std::size_t,
                                                  const std::size_t*, std::size_t, double*, const Options&);

}  // namespace xcca::correlate
