// Real FFTs for the kernels (pocketfft inside; no third-party header is exposed here).
#pragma once

#include <complex>
#include <cstddef>
#include <memory>

namespace xcca::fft {

/// A real FFT plan of length n (any n >= 1), safe to share between threads (exec is const).
/// Transforms are in place in FFTPACK "halfcomplex" order:
///   [Re X0, Re X1, Im X1, Re X2, Im X2, ..., (Re X_{n/2} if n is even)],
/// unnormalised in both directions (backward(forward(x)) == n * x).
template <class T>
class RealPlan {
public:
    explicit RealPlan(std::size_t n);
    ~RealPlan();
    RealPlan(RealPlan&&) noexcept;
    RealPlan& operator=(RealPlan&&) noexcept;
    RealPlan(const RealPlan&) = delete;
    RealPlan& operator=(const RealPlan&) = delete;

    std::size_t size() const noexcept { return n_; }
    /// x (length n) -> halfcomplex spectrum, in place, multiplied by `scale`.
    void forward(T* data, T scale = T(1)) const;
    /// halfcomplex spectrum -> x, in place, multiplied by `scale`.
    void backward(T* data, T scale = T(1)) const;

private:
    struct Impl;
    std::size_t n_;
    std::unique_ptr<Impl> impl_;
};

/// Convenience out-of-place transforms with numpy.fft.rfft / irfft semantics (irfft includes the 1/n).
/// `spectrum` has n/2 + 1 entries.
template <class T>
void rfft(const T* x, std::complex<T>* spectrum, std::size_t n);
template <class T>
void irfft(const std::complex<T>* spectrum, T* x, std::size_t n);

extern template class RealPlan<float>;
extern template class RealPlan<double>;

}  // namespace xcca::fft
