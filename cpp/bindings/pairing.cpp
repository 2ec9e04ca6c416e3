// Bindings for the pairing kernels: array checks and conversion only; the algorithms live in xcca::pairing.
#include <cstring>
#include <string>

#include "common.hpp"
#include "xcca/fit.hpp"
#include "xcca/pairing.hpp"

namespace xcca_bind {

namespace {

py::tuple pair_features(const py::array_t<double, py::array::c_style | py::array::forcecast>& features,
                        const std::string& method, const py::object& n_threads) {
    if (features.ndim() != 2) throw py::value_error("features must be a 2-D array (n_shots, n_features)");
    const int threads = n_threads_arg(n_threads);
    const auto n = static_cast<std::size_t>(features.shape(0)), d = static_cast<std::size_t>(features.shape(1));
    if (method != "loki" && method != "greedy")
        throw py::value_error("method must be 'loki' or 'greedy', got '" + method + "'");
    xcca::pairing::PairResult r;
    {
        py::gil_scoped_release release;
        r = method == "loki" ? xcca::pairing::pair_loki(features.data(), n, d, threads)
                             : xcca::pairing::pair_greedy(features.data(), n, d, threads);
    }
    const auto m = static_cast<py::ssize_t>(r.distances.size());
    py::array_t<std::int64_t> pairs({m, py::ssize_t{2}});
    py::array_t<double> dist(m);
    py::array_t<std::int64_t> unpaired(static_cast<py::ssize_t>(r.unpaired.size()));
    if (m) {
        std::memcpy(pairs.mutable_data(), r.pairs.data(), r.pairs.size() * sizeof(std::int64_t));
        std::memcpy(dist.mutable_data(), r.distances.data(), r.distances.size() * sizeof(double));
    }
    if (!r.unpaired.empty())
        std::memcpy(unpaired.mutable_data(), r.unpaired.data(), r.unpaired.size() * sizeof(std::int64_t));
    return py::make_tuple(pairs, dist, unpaired);
}

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

}  // namespace

void register_pairing(py::module_& m) {
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
    m.def("pair_features", &pair_features, py::arg("features"), py::arg("method"), py::arg("n_threads") = py::none(),
          "Pair the rows of a float64 (n, d) array: method 'loki' (index order, nearest unused) or 'greedy'.\n"
          "Returns (pairs (M, 2) int64, distances (M,), unpaired (K,) int64).");
}

}  // namespace xcca_bind
