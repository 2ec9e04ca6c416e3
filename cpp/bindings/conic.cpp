// Bindings for the tilted-detector (conic) polar remap: array checks and dtype dispatch only; xcca.geometry does the
// user-facing validation. The checks are those of bindings/polar.cpp.
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "xcca/conic.hpp"

namespace xcca_bind {

namespace {

using xcca::conic::ConicGrid;
using xcca::polar::MaskMode;
using xcca::polar::Method;
using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::vector<double> vec(const darr& a, const char* name) {
    if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
    return std::vector<double>(a.data(), a.data() + a.size());
}

template <class In, class Out>
void run(const ConicGrid& g, const py::array& images, const std::uint8_t* mask, Method method, MaskMode mode,
         double fill, py::array& out, std::uint8_t* out_mask, int n_threads) {
    const auto item = static_cast<py::ssize_t>(sizeof(In));
    const In* data = static_cast<const In*>(images.data());
    const std::ptrdiff_t fs = images.shape(0) > 1 ? images.strides(0) / item : 0;
    const std::ptrdiff_t rs = images.shape(1) > 1 ? images.strides(1) / item : 0;
    Out* o = static_cast<Out*>(out.mutable_data());
    const std::size_t n = static_cast<std::size_t>(images.shape(0));
    py::gil_scoped_release release;
    g.remap<In, Out>(data, n, fs, rs, mask, method, mode, static_cast<Out>(fill), o, out_mask, n_threads);
}

template <class Out>
void dispatch(const ConicGrid& g, const py::array& images, const std::uint8_t* mask, Method method, MaskMode mode,
              double fill, py::array& out, std::uint8_t* out_mask, int n_threads) {
    const py::dtype dt = images.dtype();
    const char kind = dt.kind();
    const auto size = dt.itemsize();
#define XCCA_CASE(K, S, T)                                                                     \
    if (kind == K && size == S) {                                                              \
        run<T, Out>(g, images, mask, method, mode, fill, out, out_mask, n_threads);            \
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

void remap(const ConicGrid& g, const py::array& images, const py::object& mask_obj, int method, int mode,
           double fill, py::array out, const py::object& out_mask_obj, const py::object& n_threads_obj) {
    const int n_threads = n_threads_arg(n_threads_obj);
    if (method != 0 && method != 1) throw py::value_error("method must be 0 (nearest) or 1 (bilinear)");
    if (mode != 0 && mode != 1) throw py::value_error("mask_mode must be 0 (strict) or 1 (renormalize)");
    const auto H = static_cast<py::ssize_t>(g.height()), W = static_cast<py::ssize_t>(g.width());
    const auto nr = static_cast<py::ssize_t>(g.n_rings()), nphi = static_cast<py::ssize_t>(g.nphi());
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
    const bool dbl = want_double || want_double64;
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
        dispatch<double>(g, images, mask, Method(method), MaskMode(mode), fill, out, out_mask, n_threads);
    else
        dispatch<float>(g, images, mask, Method(method), MaskMode(mode), fill, out, out_mask, n_threads);
}

}  // namespace

void register_conic(py::module_& m) {
    py::class_<ConicGrid>(m, "ConicGrid", "Rings of constant 2theta on a tilted detector (use Geometry.polar_grid).")
        .def(py::init([](const darr& s, const darr& c, const darr& a, const darr& b, double cx, double cy, double ly,
                         double lx, bool solid_angle, const darr& g, std::size_t height, std::size_t width) {
                 const auto bv = vec(b, "b");
                 if (bv.size() != 3) throw py::value_error("b must have 3 elements");
                 try {
                     return new ConicGrid(vec(s, "s"), vec(c, "c"), vec(a, "a"), bv.data(), cx, cy, ly, lx,
                                          solid_angle, vec(g, "g"), height, width);
                 } catch (const std::invalid_argument& e) {
                     throw py::value_error(e.what());
                 }
             }),
             py::arg("s"), py::arg("c"), py::arg("a"), py::arg("b"), py::arg("cx"), py::arg("cy"), py::arg("ly"),
             py::arg("lx"), py::arg("solid_angle"), py::arg("g"), py::arg("height"), py::arg("width"))
        .def_property_readonly("n_rings", &ConicGrid::n_rings)
        .def_property_readonly("nphi", &ConicGrid::nphi)
        .def("remap", &remap, py::arg("images"), py::arg("mask"), py::arg("method"), py::arg("mask_mode"),
             py::arg("fill"), py::arg("out"), py::arg("out_mask"), py::arg("n_threads"),
             "Remap a (N, H, W) stack into out (N, nq, nphi); out_mask (nq, nphi) bool or None.");
}

}  // namespace xcca_bind
