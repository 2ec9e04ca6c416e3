// Bindings for the pairing kernels: array checks and conversion only; the algorithms live in xcca::pairing.
#include <cstring>
#include <string>

#include "common.hpp"
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

}  // namespace

void register_pairing(py::module_& m) {
    m.def("pair_features", &pair_features, py::arg("features"), py::arg("method"), py::arg("n_threads") = py::none(),
          "Pair the rows of a float64 (n, d) array: method 'loki' (index order, nearest unused) or 'greedy'.\n"
          "Returns (pairs (M, 2) int64, distances (M,), unpaired (K,) int64).");
}

}  // namespace xcca_bind
