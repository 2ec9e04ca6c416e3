#include "xcca/fit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xcca/threads.hpp"

namespace xcca::fit {

namespace {

// One ring: P accumulators in registers (P known at compile time for the common degree-15 case).
template <class T, std::size_t P>
std::uint8_t project_row(const T* row, const std::vector<std::size_t>& idx, const double* fold, double* out) {
    double acc[P] = {};
    std::uint8_t flag = 0;
    for (std::size_t j : idx) {
        const double v = static_cast<double>(row[j]);
        if (v == 0.0) flag |= 1;
        if (!std::isfinite(v)) flag |= 2;
        const double* f = fold + j * P;
        for (std::size_t c = 0; c < P; ++c) acc[c] += v * f[c];
    }
    std::copy(acc, acc + P, out);
    return flag;
}

template <class T>
std::uint8_t project_row_any(const T* row, const std::vector<std::size_t>& idx, const double* fold, std::size_t p,
                             double* out) {
    std::fill(out, out + p, 0.0);
    std::uint8_t flag = 0;
    for (std::size_t j : idx) {
        const double v = static_cast<double>(row[j]);
        if (v == 0.0) flag |= 1;
        if (!std::isfinite(v)) flag |= 2;
        const double* f = fold + j * p;
        for (std::size_t c = 0; c < p; ++c) out[c] += v * f[c];
    }
    return flag;
}

}  // namespace

template <class T>
void fold_project(const T* rings, std::size_t n_rings, std::size_t n, std::ptrdiff_t stride, const double* fold,
                  std::size_t p, const std::uint8_t* valid, double* coef, std::uint8_t* flags, int n_threads) {
    // Only the valid samples contribute: gather their indices once.
    std::vector<std::size_t> idx;
    for (std::size_t j = 0; j < n; ++j)
        if (valid[j]) idx.push_back(j);
    parallel_for(n_rings, n_threads, 64, [&](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r) {
            const T* row = rings + static_cast<std::ptrdiff_t>(r) * stride;
            const std::uint8_t flag = p == 16 ? project_row<T, 16>(row, idx, fold, coef + r * p)
                                              : project_row_any<T>(row, idx, fold, p, coef + r * p);
            flags[r] = flag & 2 ? 2 : flag;
        }
    });
}

#define XCCA_FIT_INSTANTIATE(T)                                                                                  \
    template void fold_project<T>(const T*, std::size_t, std::size_t, std::ptrdiff_t, const double*, std::size_t, \
                                  const std::uint8_t*, double*, std::uint8_t*, int);
XCCA_FIT_INSTANTIATE(float)
XCCA_FIT_INSTANTIATE(double)
XCCA_FIT_INSTANTIATE(std::uint16_t)
XCCA_FIT_INSTANTIATE(std::int32_t)
#undef XCCA_FIT_INSTANTIATE

namespace {

// Solve the 3x3 system m z = rhs by Gaussian elimination with partial pivoting; false if singular.
bool solve3(double m[3][3], double rhs[3], double z[3]) {
    int idx[3] = {0, 1, 2};
    double a[3][4];
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) a[i][j] = m[i][j];
        a[i][3] = rhs[i];
    }
    (void)idx;
    double scale = 0;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) scale = std::max(scale, std::fabs(a[i][j]));
    if (!(scale > 0) || !std::isfinite(scale)) return false;
    for (int c = 0; c < 3; ++c) {
        int piv = c;
        for (int i = c + 1; i < 3; ++i)
            if (std::fabs(a[i][c]) > std::fabs(a[piv][c])) piv = i;
        if (std::fabs(a[piv][c]) <= 1e-14 * scale) return false;
        if (piv != c)
            for (int j = 0; j < 4; ++j) std::swap(a[c][j], a[piv][j]);
        for (int i = c + 1; i < 3; ++i) {
            const double f = a[i][c] / a[c][c];
            for (int j = c; j < 4; ++j) a[i][j] -= f * a[c][j];
        }
    }
    for (int i = 2; i >= 0; --i) {
        double s = a[i][3];
        for (int j = i + 1; j < 3; ++j) s -= a[i][j] * z[j];
        z[i] = s / a[i][i];
    }
    return std::isfinite(z[0]) && std::isfinite(z[1]) && std::isfinite(z[2]);
}

}  // namespace

CircleFit circle_fit(const double* x, const double* y, std::size_t n, const double* start, int max_iter, double tol) {
    CircleFit out;
    if (n < 3) {
        out.status = 3;
        return out;
    }
    double mx = 0, my = 0;
    for (std::size_t i = 0; i < n; ++i) {
        mx += x[i];
        my += y[i];
    }
    mx /= static_cast<double>(n);
    my /= static_cast<double>(n);
    std::vector<double> u(n), v(n);
    for (std::size_t i = 0; i < n; ++i) {
        u[i] = x[i] - mx;
        v[i] = y[i] - my;
    }
    const double nn = static_cast<double>(n);
    double a, b, r;
    if (start) {
        a = start[0] - mx;
        b = start[1] - my;
        r = start[2];
    } else {  // Kasa: least squares of u^2 + v^2 = 2 a u + 2 b v + c (u, v centred: well conditioned)
        double suu = 0, svv = 0, suv = 0, su = 0, sv = 0, suz = 0, svz = 0, sz = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const double z = u[i] * u[i] + v[i] * v[i];
            suu += u[i] * u[i];
            svv += v[i] * v[i];
            suv += u[i] * v[i];
            su += u[i];
            sv += v[i];
            suz += u[i] * z;
            svz += v[i] * z;
            sz += z;
        }
        double m[3][3] = {{suu, suv, su}, {suv, svv, sv}, {su, sv, nn}};
        double rhs[3] = {suz, svz, sz}, sol[3];
        if (!solve3(m, rhs, sol)) {
            out.status = 2;
            return out;
        }
        a = sol[0] / 2;
        b = sol[1] / 2;
        const double r2 = sol[2] + a * a + b * b;
        if (!(r2 > 0) || !std::isfinite(r2)) {
            out.status = 2;
            return out;
        }
        r = std::sqrt(r2);
    }
    auto cost_of = [&](double ca, double cb, double cr) {
        double c = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const double du = u[i] - ca, dv = v[i] - cb;
            const double f = std::max(std::sqrt(du * du + dv * dv), 1e-300) - cr;
            c += f * f;
        }
        return c;
    };
    double cost = cost_of(a, b, r);
    double lam = 1e-3;
    bool converged = false;
    int it = 0;
    for (it = 1; it <= max_iter; ++it) {
        double scc = 0, sss = 0, scs = 0, sc = 0, ss = 0, scf = 0, ssf = 0, sf = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const double du = u[i] - a, dv = v[i] - b;
            const double d = std::max(std::sqrt(du * du + dv * dv), 1e-300);
            const double c = du / d, s = dv / d, f = d - r;
            scc += c * c;
            sss += s * s;
            scs += c * s;
            sc += c;
            ss += s;
            scf += c * f;
            ssf += s * f;
            sf += f;
        }
        const double jtj[3][3] = {{scc, scs, sc}, {scs, sss, ss}, {sc, ss, nn}};
        double g[3] = {scf, ssf, sf};  // -J^T f with J = [-c, -s, -1]
        double step[3], na = a, nb = b, nr = r, ncost = cost;
        bool found = false;
        while (true) {
            double lhs[3][3];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) lhs[i][j] = jtj[i][j] + (i == j ? lam * jtj[i][i] : 0.0);
            double rhs[3] = {g[0], g[1], g[2]};
            if (!solve3(lhs, rhs, step)) {
                out.status = 2;
                out.cost = cost;
                return out;
            }
            na = a + step[0];
            nb = b + step[1];
            nr = r + step[2];
            ncost = cost_of(na, nb, nr);
            if (ncost <= cost) {
                found = true;
                break;
            }
            lam *= 10;
            if (lam > 1e12) break;
        }
        if (!found) {  // no step decreases the cost: at the minimum up to rounding
            converged = true;
            break;
        }
        const double smax = std::max({std::fabs(step[0]), std::fabs(step[1]), std::fabs(step[2])});
        const bool small = smax <= tol * (1 + std::fabs(nr));
        const bool flat = cost - ncost <= 1e-15 * std::max(cost, 1e-300);
        a = na;
        b = nb;
        r = nr;
        cost = ncost;
        lam = std::max(lam / 10, 1e-12);
        if (small || flat) {
            converged = true;
            break;
        }
    }
    out.cx = a + mx;
    out.cy = b + my;
    out.r = std::fabs(r);
    out.cost = cost;
    out.n_iter = std::min(it, max_iter);
    out.status = (converged && std::isfinite(cost)) ? 0 : 1;
    return out;
}

}  // namespace xcca::fit
