#include "xcca/fft.hpp"

#include <stdexcept>
#include <vector>

#include "pocketfft_impl.hpp"

namespace xcca::fft {

template <class T>
struct RealPlan<T>::Impl {
    explicit Impl(std::size_t n) : plan(n) {}
    pocketfft::detail::pocketfft_r<T> plan;
};

template <class T>
RealPlan<T>::RealPlan(std::size_t n) : n_(n) {
    if (n == 0) throw std::invalid_argument("xcca::fft::RealPlan: length must be >= 1");
    impl_ = std::make_unique<Impl>(n);
}
template <class T>
RealPlan<T>::~RealPlan() = default;
template <class T>
RealPlan<T>::RealPlan(RealPlan&&) noexcept = default;
template <class T>
RealPlan<T>& RealPlan<T>::operator=(RealPlan&&) noexcept = default;

template <class T>
void RealPlan<T>::forward(T* data, T scale) const {
    impl_->plan.exec(data, scale, true);
}
template <class T>
void RealPlan<T>::backward(T* data, T scale) const {
    impl_->plan.exec(data, scale, false);
}

template <class T>
void rfft(const T* x, std::complex<T>* spectrum, std::size_t n) {
    RealPlan<T> plan(n);
    std::vector<T> buf(x, x + n);
    plan.forward(buf.data());
    spectrum[0] = {buf[0], T(0)};
    for (std::size_t k = 1; 2 * k < n; ++k) spectrum[k] = {buf[2 * k - 1], buf[2 * k]};
    if (n % 2 == 0) spectrum[n / 2] = {buf[n - 1], T(0)};
}

template <class T>
void irfft(const std::complex<T>* spectrum, T* x, std::size_t n) {
    RealPlan<T> plan(n);
    x[0] = spectrum[0].real();
    for (std::size_t k = 1; 2 * k < n; ++k) {
        x[2 * k - 1] = spectrum[k].real();
        x[2 * k] = spectrum[k].imag();
    }
    if (n % 2 == 0) x[n - 1] = spectrum[n / 2].real();
    plan.backward(x, T(1) / static_cast<T>(n));
}

template class RealPlan<float>;
template class RealPlan<double>;
template void rfft<float>(const float*, std::complex<float>*, std::size_t);
template void rfft<double>(const double*, std::complex<double>*, std::size_t);
template void irfft<float>(const std::complex<float>*, float*, std::size_t);
template void irfft<double>(const std::complex<double>*, double*, std::size_t);

}  // namespace xcca::fft
