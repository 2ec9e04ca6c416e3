// pocketfft is wired in: RealPlan and rfft/irfft against a direct DFT, for awkward lengths too.
#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "check.hpp"
#include "xcca/fft.hpp"

template <class T>
static void check_length(std::size_t n, double tol) {
    std::mt19937 rng(static_cast<unsigned>(n));
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> x(n);
    for (auto& v : x) v = static_cast<T>(dist(rng));

    std::vector<std::complex<T>> spec(n / 2 + 1);
    xcca::fft::rfft(x.data(), spec.data(), n);
    const double pi = std::acos(-1.0);
    for (std::size_t k = 0; k <= n / 2; ++k) {
        std::complex<double> ref = 0;
        for (std::size_t j = 0; j < n; ++j)
            ref += static_cast<double>(x[j]) * std::polar(1.0, -2 * pi * double(j * k % n) / double(n));
        CHECK_CLOSE(spec[k].real(), ref.real(), 0, tol * std::sqrt(double(n)));
        CHECK_CLOSE(spec[k].imag(), ref.imag(), 0, tol * std::sqrt(double(n)));
    }
    std::vector<T> back(n);
    xcca::fft::irfft(spec.data(), back.data(), n);
    for (std::size_t j = 0; j < n; ++j) CHECK_CLOSE(back[j], x[j], 0, tol);

    // In-place halfcomplex round trip with the unnormalised convention.
    xcca::fft::RealPlan<T> plan(n);
    CHECK(plan.size() == n);
    std::vector<T> y = x;
    plan.forward(y.data());
    plan.backward(y.data(), T(1) / T(n));
    for (std::size_t j = 0; j < n; ++j) CHECK_CLOSE(y[j], x[j], 0, tol);
}

int main() {
    for (std::size_t n : {1, 2, 3, 5, 8, 17, 97, 360, 1000, 1009, 5000}) {
        check_length<double>(n, 1e-12);
        check_length<float>(n, 2e-5);
    }
    CHECK_THROWS(xcca::fft::RealPlan<double>(0), std::invalid_argument);
    TEST_MAIN_RETURN();
}
