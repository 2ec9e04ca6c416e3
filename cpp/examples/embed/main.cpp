// Facility software embedding xcca::core: the version, a thread count and a real FFT.
#include <cmath>
#include <complex>
#include <cstdio>
#include <vector>

#include <xcca/fft.hpp>
#include <xcca/threads.hpp>
#include <xcca/version.hpp>

int main() {
    const std::size_t n = 360;
    std::vector<double> ring(n);
    for (std::size_t j = 0; j < n; ++j) ring[j] = 1.0 + std::cos(6.0 * 2.0 * M_PI * double(j) / double(n));
    std::vector<std::complex<double>> spec(n / 2 + 1);
    xcca::fft::rfft(ring.data(), spec.data(), n);
    // A six-fold ring: DC = n, the sixth harmonic = n/2, nothing else.
    const bool ok = std::abs(spec[0] - double(n)) < 1e-9 && std::abs(std::abs(spec[6]) - n / 2.0) < 1e-9 &&
                    std::abs(spec[5]) < 1e-9;
    std::printf("xcca %s, %u usable cores, six-fold harmonic %s\n", xcca::version(), xcca::usable_cores(),
                ok ? "found" : "MISSING");
    return ok ? 0 : 1;
}
