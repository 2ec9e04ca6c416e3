// Run correlator kernels against direct sums (reference BLAS loops or the linked system BLAS).
#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <vector>

#include "check.hpp"
#include "xcca/runcorr.hpp"

namespace xr = xcca::runcorr;

int main() {
    for (std::size_t n : {1u, 2u, 7u, 12u}) {
        const std::size_t S = 5, nq = 3, nh = n / 2 + 1;
        std::mt19937 gen(static_cast<unsigned>(n));
        std::normal_distribution<double> nd(1.0, 1.0);
        std::vector<double> a(S * nq * n);
        std::vector<std::uint8_t> m(S * nq * n);
        for (auto& x : a) x = nd(gen);
        for (auto& x : m) x = (gen() % 10) > 2;
        std::vector<std::int64_t> units(S), qsel(nq);
        for (std::size_t s = 0; s < S; ++s) units[s] = static_cast<std::int64_t>(s);
        for (std::size_t q = 0; q < nq; ++q) qsel[q] = static_cast<std::int64_t>(q);
        std::vector<std::complex<double>> spec(nh * S * nq), mspec(nh * S * nq), acc(nh * nq * nq), macc(nh * nq * nq);
        xr::SpecJob<double> j;
        j.data = a.data();
        j.n_shots = S;
        j.nq = nq;
        j.n = n;
        j.mask = m.data();
        j.n_mask_rows = S * nq;
        j.units = units.data();
        j.K = S;
        j.qsel = qsel.data();
        j.nqu = nq;
        j.spec = spec.data();
        j.mspec = mspec.data();
        CHECK(xr::spectra(j, 2) == 0);
        xr::herk_update(spec.data(), nh, S, nq, 0, S, 1.0, acc.data(), 2);
        xr::herk_update(mspec.data(), nh, S, nq, 0, S, 1.0, macc.data(), 1);
        const std::vector<std::int64_t> pairs = {0, 0, 0, 2, 2, 1};
        std::vector<double> num(3 * n), cnt(3 * n);
        xr::lag_sums(acc.data(), nh, nq, n, true, pairs.data(), 3, num.data(), 2);
        xr::lag_sums(macc.data(), nh, nq, n, true, pairs.data(), 3, cnt.data(), 1);
        for (std::size_t p = 0; p < 3; ++p)
            for (std::size_t k = 0; k < n; ++k) {
                double dn = 0, dc = 0;
                const std::size_t qa = static_cast<std::size_t>(pairs[2 * p]), qb = static_cast<std::size_t>(pairs[2 * p + 1]);
                for (std::size_t s = 0; s < S; ++s)
                    for (std::size_t i = 0; i < n; ++i) {
                        const std::size_t ia = (s * nq + qa) * n + i, ib = (s * nq + qb) * n + (i + k) % n;
                        dn += m[ia] * a[ia] * m[ib] * a[ib];
                        dc += m[ia] * m[ib];
                    }
                CHECK_CLOSE(num[p * n + k], dn, 1e-12, 1e-12);
                CHECK_CLOSE(cnt[p * n + k], dc, 0, 1e-9);
            }
        // The fused result pass (one block): counts rounded, ratio, no jackknife with B = 1.
        std::vector<double> corr(3 * n), err(3 * n), rep(3 * n);
        std::vector<std::int64_t> counts(3 * n);
        const double dev = xr::pooled_result<double>(acc.data(), macc.data(), 1, nh, nq, n, true, pairs.data(), 3, false,
                                                     corr.data(), err.data(), counts.data(), rep.data(), 2);
        CHECK(dev < 1e-6);
        for (std::size_t i = 0; i < 3 * n; ++i) {
            CHECK(counts[i] == static_cast<std::int64_t>(std::llround(cnt[i])));
            if (counts[i] > 0) {
                CHECK_CLOSE(corr[i], num[i] / counts[i], 1e-12, 1e-12);
            } else {
                CHECK(std::isnan(corr[i]));
            }
            CHECK(std::isnan(err[i]));
            CHECK(std::isnan(rep[i]));  // leaving out the only block leaves no counts
        }
        // Packed layout: numerator upper triangle (offset 0) and counts lower triangle (offset 1) of one array with
        // leading dimension nq + 1; the results are bit-identical to the separate accumulators'.
        std::vector<std::complex<double>> pk(nh * nq * (nq + 1));
        xr::herk_update(spec.data(), nh, S, nq, 0, S, 1.0, pk.data(), 2, 'U', nq + 1, 0);
        xr::herk_update(mspec.data(), nh, S, nq, 0, S, 1.0, pk.data(), 1, 'L', nq + 1, 1);
        for (std::size_t h = 0; h < nh; ++h)
            for (std::size_t jj = 0; jj < nq; ++jj)
                for (std::size_t i = 0; i <= jj; ++i) {
                    CHECK(pk[h * nq * (nq + 1) + i + jj * (nq + 1)] == acc[h * nq * nq + i + jj * nq]);
                    const std::complex<double> l = pk[h * nq * (nq + 1) + 1 + jj + i * (nq + 1)];
                    CHECK_CLOSE(std::conj(l).real(), macc[h * nq * nq + i + jj * nq].real(), 1e-12, 1e-12);
                    CHECK_CLOSE(std::conj(l).imag(), macc[h * nq * nq + i + jj * nq].imag(), 1e-12, 1e-12);
                }
        std::vector<double> corr2(3 * n), err2(3 * n), rep2(3 * n);
        std::vector<std::int64_t> counts2(3 * n);
        xr::pooled_result<double>(pk.data(), pk.data(), 1, nh, nq, n, true, pairs.data(), 3, false, corr2.data(),
                                  err2.data(), counts2.data(), rep2.data(), 2, true);
        for (std::size_t i = 0; i < 3 * n; ++i) {
            CHECK(counts2[i] == counts[i]);
            CHECK(std::isnan(corr[i]) ? std::isnan(corr2[i]) : corr2[i] == corr[i]);
        }
        CHECK_THROWS(xr::pooled_result<double>(pk.data(), macc.data(), 1, nh, nq, n, true, pairs.data(), 3, false,
                                               corr2.data(), err2.data(), counts2.data(), rep2.data(), 2, true),
                     std::invalid_argument);
        CHECK_THROWS(xr::herk_update(spec.data(), nh, S, nq, 0, S, 1.0, pk.data(), 2, 'L', nq, 1),
                     std::invalid_argument);
    }
    std::vector<std::int64_t> bad_units = {7};
    std::vector<std::int64_t> qs = {0};
    xr::SpecJob<double> j;
    std::vector<double> a(4);
    j.data = a.data();
    j.n_shots = 1;
    j.nq = 1;
    j.n = 4;
    j.units = bad_units.data();
    j.K = 1;
    j.qsel = qs.data();
    j.nqu = 1;
    CHECK_THROWS(xr::spectra(j, 1), std::out_of_range);
    CHECK(!xr::current_blas().name.empty());
    return xcca_test::failures();
}
