// Bindings for the ring-profile fit kernel (xcca::fit, the hot loop of xcca.fit_periodic): array checks and
// conversion only.
#include <cstdint>

#include "common.hpp"
#include "xcca/fit.hpp"

namespace xcca_bind {

namespace {

template <class T>
py::tuple fold_project(const py::array_t<T, py::array::c_style | py::array::forcecast>& rings,
                       const py::array_t<double, py::array::c_style | py::array::forcecast>& fold,
                       const py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>& valid,
                       const py::object& n_threads) {
    if (rings.ndim() != 2) throw py::value_error("rings must be 2-D (N, n)");
    if (fold.ndim() != 2 || fold.shape(0) != rings.shape(1))
        throw py::value_error("fold must be 2-D (n, p) with n = the rings' length");
    if (valid.ndim() != 1 || valid.shape(0) != rings.shape(1)) throw py::value_error("valid must be 1-D (n,)");
    const int threads = n_threads_arg(n_threads);
    const auto n_rings = static_cast<std::size_t>(rings.shape(0)), n = static_cast<std::size_t>(rings.shape(1));
    const auto p = static_cast<std::size_t>(fold.shape(1));
    py::array_t<double> coef({static_cast<py::ssize_t>(n_rings), static_cast<py::ssize_t>(p)});
    py::array_t<std::uint8_t> flags(static_cast<py::ssize_t>(n_rings));
    {
        py::gil_scoped_release release;
        xcca::fit::fold_project<T>(rings.data(), n_rings, n, static_cast<std::ptrdiff_t>(n), fold.data(), p,
                                   valid.data(), coef.mutable_data(), flags.mutable_data(), threads);
    }
    return py::make_tuple(coef, flags);
}

py::tuple circle_fit(const py::array_t<double, py::array::c_style | py::array::forcecast>& x,
                     const py::array_t<double, py::array::c_style | py::array::forcecast>& y, const py::object& start,
                     int max_iter, double tol) {
    if (x.ndim() != 1 || y.ndim() != 1 || x.shape(0) != y.shape(0))
        throw py::value_error("x and y must be 1-D arrays of equal length");
    if (max_iter < 1) throw py::value_error("max_iter must be >= 1");
    double st[3];
    const double* sp = nullptr;
    if (!start.is_none()) {
        auto s = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(start);
        if (!s || s.ndim() != 1 || s.shape(0) != 3) throw py::value_error("start must be (cx, cy, r)");
        for (int i = 0; i < 3; ++i) st[i] = s.data()[i];
        sp = st;
    }
    xcca::fit::CircleFit f;
    {
        py::gil_scoped_release release;
        f = xcca::fit::circle_fit(x.data(), y.data(), static_cast<std::size_t>(x.shape(0)), sp, max_iter, tol);
    }
    return py::make_tuple(f.cx, f.cy, f.r, f.cost, f.n_iter, f.status);
}

}  // namespace

void register_fit(py::module_& m) {
    m.def("circle_fit", &circle_fit, py::arg("x"), py::arg("y"), py::arg("start") = py::none(),
          py::arg("max_iter") = 100, py::arg("tol") = 1e-12,
          "(cx, cy, r, cost, n_iter, status) = circle_fit(x, y, start=None, max_iter=100, tol=1e-12): geometric "
          "least-squares circle (Kasa start or `start`, then Levenberg-Marquardt); status 0 converged, "
          "1 not converged, 2 degenerate, 3 fewer than 3 points.");
    // Overload order matters: exact dtypes match first; anything else is converted to float64 (never to float32).
    const char* doc =
        "coef, flags = fold_project(rings (N, n), fold (n, p) float64, valid (n,) uint8, n_threads=None): "
        "coef = rings[:, valid] @ fold[valid]; flags 1 = a valid sample is 0, 2 = a valid sample is not finite.";
    m.def("fold_project", &fold_project<double>, py::arg("rings"), py::arg("fold"), py::arg("valid"),
          py::arg("n_threads") = py::none(), doc);
    m.def("fold_project", &fold_project<float>, py::arg("rings"), py::arg("fold"), py::arg("valid"),
          py::arg("n_threads") = py::none(), doc);
    m.def("fold_project", &fold_project<std::uint16_t>, py::arg("rings"), py::arg("fold"), py::arg("valid"),
          py::arg("n_threads") = py::none(), doc);
    m.def("fold_project", &fold_project<std::int32_t>, py::arg("rings"), py::arg("fold"), py::arg("valid"),
          py::arg("n_threads") = py::none(), doc);
}

}  // namespace xcca_bind
