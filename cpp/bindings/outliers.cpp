// Bindings for the per-ring outlier kernel (xcca::outliers): array checks and conversion only.
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "xcca/outliers.hpp"

namespace xcca_bind {

namespace {

template <class T>
py::tuple outliers_impl(const py::array& values, const py::array& valid, double thresh, int threads) {
    const auto x = py::array_t<T, py::array::c_style>::ensure(values);
    const auto v = py::array_t<bool, py::array::c_style>::ensure(valid);
    if (!x || !v) throw py::type_error("ring_outliers: values and valid must be C-contiguous arrays");
    const py::ssize_t nd = x.ndim();
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + nd);
    const std::size_t n = static_cast<std::size_t>(shape.back());
    const std::size_t rows = n ? static_cast<std::size_t>(x.size()) / n : 0;
    const std::size_t vrows = n ? static_cast<std::size_t>(v.size()) / n : 0;
    py::array_t<bool> out(shape);
    std::vector<py::ssize_t> rshape(shape.begin(), shape.end() - 1);
    py::array_t<std::int64_t> removed(rshape);
    {
        py::gil_scoped_release release;
        xcca::ring_outliers<T>(x.data(), reinterpret_cast<const std::uint8_t*>(v.data()), rows, n, thresh,
                               reinterpret_cast<std::uint8_t*>(out.mutable_data()), removed.mutable_data(), threads,
                               vrows);
    }
    return py::make_tuple(out, removed);
}

py::tuple ring_outliers(const py::array& values, const py::array& valid, double thresh,
                        const py::object& n_threads) {
    const int threads = n_threads_arg(n_threads);
    if (values.ndim() < 1) throw py::value_error("ring_outliers: values must have at least one dimension");
    // valid: the shape of values, or its trailing dimensions (one mask shared by the leading axes)
    if (valid.ndim() < 1 || valid.ndim() > values.ndim() ||
        !std::equal(valid.shape(), valid.shape() + valid.ndim(), values.shape() + (values.ndim() - valid.ndim())))
        throw py::value_error("ring_outliers: valid must have the shape of values or of its trailing dimensions");
    if (!py::isinstance<py::array_t<bool>>(valid)) throw py::type_error("ring_outliers: valid must be boolean");
    if (!(thresh > 0)) throw py::value_error("ring_outliers: thresh must be > 0");
    if (py::isinstance<py::array_t<float>>(values)) return outliers_impl<float>(values, valid, thresh, threads);
    if (py::isinstance<py::array_t<double>>(values)) return outliers_impl<double>(values, valid, thresh, threads);
    throw py::type_error("ring_outliers: values must be float32 or float64");
}

}  // namespace

void register_outliers(py::module_& m) {
    m.def("ring_outliers", &ring_outliers, py::arg("values"), py::arg("valid"), py::arg("thresh"),
          py::arg("n_threads") = py::none(),
          "Per-row modified z-score outliers over the valid finite samples (last axis): returns (valid & ~outlier, "
          "outliers per row). valid (True = valid) has the shape of values or of its trailing dimensions.");
}

}  // namespace xcca_bind
