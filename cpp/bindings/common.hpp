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
void register_cbf(py::module_& m);

/// n_threads from Python: None -> 0 (all usable cores); otherwise an int 1 .. 2^31 - 1 (the core caps it at the
/// usable cores). bool, float and str are refused with a TypeError, out-of-range ints with a ValueError; all name
/// n_threads (xcca._checks.n_threads applies the same rule in Python).
inline int n_threads_arg(const py::object& n_threads) {
    if (n_threads.is_none()) return 0;
    PyObject* o = n_threads.ptr();
    if (PyBool_Check(o) || !PyIndex_Check(o) || PyFloat_Check(o))
        throw py::type_error("n_threads must be None or a positive int, got " +
                             std::string(py::str(py::type::handle_of(n_threads).attr("__name__"))));
    const py::int_ i = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
    if (!i) throw py::error_already_set();
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
    if (overflow > 0 || v > 2147483647LL)
        throw py::value_error("n_threads must be at most 2147483647, got " + std::string(py::str(i)));
    if (overflow < 0 || v <= 0)
        throw py::value_error("n_threads must be None or a positive int, got " + std::string(py::str(i)));
    return static_cast<int>(v);
}

}  // namespace xcca_bind
