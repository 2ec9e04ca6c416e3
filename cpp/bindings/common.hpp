// Shared helpers for the pybind11 bindings: argument conversion and checks only, no numerical logic.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "xcca/polar.hpp"  // Method, MaskMode (shared by the polar and conic grids)

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


// ----- the remap of a precomputed grid (xcca::polar::PolarGrid, xcca::conic::ConicGrid): array checks and dtype
// dispatch shared by bindings/polar.cpp and bindings/conic.cpp. Grid: height(), width(), nphi() and
// remap<In, Out>(...) with PolarGrid::remap's arguments; n_rows: its number of output rows.

inline std::vector<double> vector_arg(const py::array_t<double, py::array::c_style | py::array::forcecast>& a,
                               const char* name) {
    if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
    return std::vector<double>(a.data(), a.data() + a.size());
}

template <class In, class Out, class Grid>
void remap_run(const Grid& g, const py::array& images, const std::uint8_t* mask, xcca::polar::Method method, xcca::polar::MaskMode mode,
         double fill, py::array& out, std::uint8_t* out_mask, int n_threads) {
    const auto item = static_cast<py::ssize_t>(sizeof(In));
    const In* data = static_cast<const In*>(images.data());
    const std::ptrdiff_t fs = images.shape(0) > 1 ? images.strides(0) / item : 0;
    const std::ptrdiff_t rs = images.shape(1) > 1 ? images.strides(1) / item : 0;
    Out* o = static_cast<Out*>(out.mutable_data());
    const std::size_t n = static_cast<std::size_t>(images.shape(0));
    py::gil_scoped_release release;
    g.template remap<In, Out>(data, n, fs, rs, mask, method, mode, static_cast<Out>(fill), o, out_mask, n_threads);
}

template <class Out, class Grid>
void remap_dispatch(const Grid& g, const py::array& images, const std::uint8_t* mask, xcca::polar::Method method, xcca::polar::MaskMode mode,
              double fill, py::array& out, std::uint8_t* out_mask, int n_threads) {
    const py::dtype dt = images.dtype();
    const char kind = dt.kind();
    const auto size = dt.itemsize();
#define XCCA_CASE(K, S, T)                                                                     \
    if (kind == K && size == S) {                                                              \
        remap_run<T, Out>(g, images, mask, method, mode, fill, out, out_mask, n_threads);            \
        return;                                                                                \
    }
    XCCA_CASE('f', 4, float)
    XCCA_CASE('f', 8, double)
    XCCA_CASE('u', 1, std::uint8_t)
    XCCA_CASE('b', 1, std::uint8_t)
    XCCA_CASE('i', 1, std::int8_t)
    XCCA_CASE('u', 2, std::uint16_t)
    XCCA_CASE('i', 2, std::int16_t)
    XCCA_CASE('u', 4, std::uint32_t)
    XCCA_CASE('i', 4, std::int32_t)
    XCCA_CASE('u', 8, std::uint64_t)
    XCCA_CASE('i', 8, std::int64_t)
#undef XCCA_CASE
    throw py::type_error("images: unsupported dtype " + std::string(py::str(dt)));
}

template <class Grid>
void remap_checked(const Grid& g, std::size_t n_rows, const py::array& images, const py::object& mask_obj,
                   int method, int mode, double fill, py::array out, const py::object& out_mask_obj,
                   const py::object& n_threads_obj, bool float32_out = false) {
    const int n_threads = n_threads_arg(n_threads_obj);
    if (method != 0 && method != 1) throw py::value_error("method must be 0 (nearest) or 1 (bilinear)");
    if (mode != 0 && mode != 1) throw py::value_error("mask_mode must be 0 (strict) or 1 (renormalize)");
    const auto H = static_cast<py::ssize_t>(g.height()), W = static_cast<py::ssize_t>(g.width());
    const auto nr = static_cast<py::ssize_t>(n_rows), nphi = static_cast<py::ssize_t>(g.nphi());
    if (images.ndim() != 3 || images.shape(1) != H || images.shape(2) != W)
        throw py::value_error("images must have shape (N, " + std::to_string(H) + ", " + std::to_string(W) + ")");
    const py::dtype dt = images.dtype();
    if (!(dt.byteorder() == '=' || dt.byteorder() == '|'))  // numpy spells native order '='
        throw py::value_error("images must be in native byte order");
    const auto item = static_cast<py::ssize_t>(dt.itemsize());
    // Strides of length-1 axes are never used (NumPy leaves them arbitrary).
    auto stride = [&](int ax) { return images.shape(ax) > 1 ? images.strides(ax) : (ax == 2 ? item : 0); };
    if (stride(2) != item || stride(1) % item != 0 || stride(0) % item != 0)
        throw py::value_error("images must have contiguous columns and element-aligned strides");
    const bool want_double = dt.kind() == 'f' && dt.itemsize() == 8;
    const bool want_double64 = (dt.kind() == 'i' || dt.kind() == 'u') && dt.itemsize() == 8;
    const bool dbl = (want_double || want_double64) && !float32_out;  // float32_out: single-precision grids
    if (!out.writeable()) throw py::value_error("out must be writeable");
    if (out.ndim() != 3 || out.shape(0) != images.shape(0) || out.shape(1) != nr || out.shape(2) != nphi)
        throw py::value_error("out has the wrong shape");
    if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
    const py::dtype odt = out.dtype();
    if (odt.kind() != 'f' || odt.itemsize() != (dbl ? 8 : 4) || !(odt.byteorder() == '=' || odt.byteorder() == '|'))
        throw py::type_error(std::string("out must be native ") + (dbl ? "float64" : "float32"));
    const std::uint8_t* mask = nullptr;
    py::array mask_arr;
    if (!mask_obj.is_none()) {
        mask_arr = py::array::ensure(mask_obj);
        if (!mask_arr || mask_arr.ndim() != 2 || mask_arr.shape(0) != H || mask_arr.shape(1) != W ||
            mask_arr.dtype().itemsize() != 1 || mask_arr.dtype().kind() != 'b' ||
            !(mask_arr.flags() & py::array::c_style))
            throw py::value_error("mask must be a C-contiguous bool array of the image shape");
        mask = static_cast<const std::uint8_t*>(mask_arr.data());
    }
    std::uint8_t* out_mask = nullptr;
    py::array om_arr;
    if (!out_mask_obj.is_none()) {
        om_arr = py::array::ensure(out_mask_obj);
        if (!om_arr || om_arr.ndim() != 2 || om_arr.shape(0) != nr || om_arr.shape(1) != nphi ||
            om_arr.dtype().kind() != 'b' || !(om_arr.flags() & py::array::c_style) || !om_arr.writeable())
            throw py::value_error("out_mask must be a writeable C-contiguous bool array of shape (nr, nphi)");
        out_mask = static_cast<std::uint8_t*>(om_arr.mutable_data());
    }
    if (dbl)
        remap_dispatch<double>(g, images, mask, xcca::polar::Method(method), xcca::polar::MaskMode(mode), fill, out, out_mask, n_threads);
    else
        remap_dispatch<float>(g, images, mask, xcca::polar::Method(method), xcca::polar::MaskMode(mode), fill, out, out_mask, n_threads);
}

}  // namespace xcca_bind
