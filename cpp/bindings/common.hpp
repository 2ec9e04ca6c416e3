// Shared helpers for the pybind11 bindings: argument conversion and checks only, no numerical logic.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

namespace xcca_bind {

// Each kernel area registers its functions in xcca._core from its own cpp/bindings/<kernel>.cpp.
void register_core(py::module_& m);
void register_polar(py::module_& m);
void register_conic(py::module_& m);
void register_correlate(py::module_& m);
void register_pairing(py::module_& m);
void register_fit(py::module_& m);
void register_outliers(py::module_& m);
void register_runcorr(py::module_& m);

/// n_threads from Python: None -> 0 (all usable cores); an int must be >= 1.
inline int n_threads_arg(const py::object& n_threads) {
    if (n_threads.is_none()) return 0;
    const long v = py::cast<long>(n_threads);
    if (v <= 0) throw py::value_error("n_threads must be a positive integer or None, got " + std::to_string(v));
    return static_cast<int>(v);
}

}  // namespace xcca_bind
