// Bindings for the tilted-detector (conic) polar remap: array checks and dtype dispatch only; xcca.geometry does the
// user-facing validation. The array checks are shared with bindings/polar.cpp (common.hpp).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "xcca/conic.hpp"

namespace xcca_bind {

namespace {

using xcca::conic::ConicGrid;
using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::vector<double> vec(const darr& a, const char* name) { return vector_arg(a, name); }

void remap(const ConicGrid& g, const py::array& images, const py::object& mask_obj, int method, int mode,
           double fill, py::array out, const py::object& out_mask_obj, const py::object& n_threads_obj) {
    remap_checked(g, g.n_rings(), images, mask_obj, method, mode, fill, std::move(out), out_mask_obj, n_threads_obj,
                  g.single());
}

// remap_checked's grid interface over ConicGrid::remap_flat_dark (the same checks and dtype dispatch as remap).
struct FlatDarkGrid {
    const ConicGrid& g;
    const double* dark_inv_flat;
    std::size_t height() const noexcept { return g.height(); }
    std::size_t width() const noexcept { return g.width(); }
    std::size_t nphi() const noexcept { return g.nphi(); }
    template <class In, class Out>
    void remap(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
               const std::uint8_t* mask, xcca::polar::Method method, xcca::polar::MaskMode mode, Out fill, Out* out,
               std::uint8_t* out_mask, int n_threads) const {
        g.remap_flat_dark<In, Out>(images, n_frames, frame_stride, row_stride, mask, method, mode, fill, out,
                                   out_mask, n_threads, dark_inv_flat);
    }
};

void remap_flat_dark(const ConicGrid& g, const py::array& images, const py::object& mask_obj, int method, int mode,
                     double fill, py::array out, const py::object& out_mask_obj, const py::object& n_threads_obj,
                     const darr& dark_inv_flat) {
    const auto H = static_cast<py::ssize_t>(g.height()), W = static_cast<py::ssize_t>(g.width());
    if (dark_inv_flat.ndim() != 3 || dark_inv_flat.shape(0) != H || dark_inv_flat.shape(1) != W ||
        dark_inv_flat.shape(2) != 2)
        throw py::value_error("dark_inv_flat must have shape (" + std::to_string(H) + ", " + std::to_string(W) +
                              ", 2)");
    const FlatDarkGrid fd{g, dark_inv_flat.data()};
    remap_checked(fd, g.n_rings(), images, mask_obj, method, mode, fill, std::move(out), out_mask_obj,
                  n_threads_obj);
}

}  // namespace

void register_conic(py::module_& m) {
    py::class_<ConicGrid>(m, "ConicGrid", "Rings of constant 2theta on a tilted detector (use Geometry.polar_grid).")
        .def(py::init([](const darr& s, const darr& c, const darr& a, const darr& b, double cx, double cy, double ly,
                         double lx, bool solid_angle, const darr& g, std::size_t height, std::size_t width,
                         bool single) {
                 const auto bv = vec(b, "b");
                 if (bv.size() != 3) throw py::value_error("b must have 3 elements");
                 try {
                     return new ConicGrid(vec(s, "s"), vec(c, "c"), vec(a, "a"), bv.data(), cx, cy, ly, lx,
                                          solid_angle, vec(g, "g"), height, width, single);
                 } catch (const std::invalid_argument& e) {
                     throw py::value_error(e.what());
                 }
             }),
             py::arg("s"), py::arg("c"), py::arg("a"), py::arg("b"), py::arg("cx"), py::arg("cy"), py::arg("ly"),
             py::arg("lx"), py::arg("solid_angle"), py::arg("g"), py::arg("height"), py::arg("width"),
             py::arg("single") = false)
        .def_property_readonly("n_rings", &ConicGrid::n_rings)
        .def_property_readonly("single", &ConicGrid::single)
        .def_property_readonly("nphi", &ConicGrid::nphi)
        .def("remap", &remap, py::arg("images"), py::arg("mask"), py::arg("method"), py::arg("mask_mode"),
             py::arg("fill"), py::arg("out"), py::arg("out_mask"), py::arg("n_threads"),
             "Remap a (N, H, W) stack into out (N, nq, nphi); out_mask (nq, nphi) bool or None. out is float32 for a "
             "single-precision grid, else float64 for 8-byte pixels and float32 otherwise.")
        .def("remap_flat_dark", &remap_flat_dark, py::arg("images"), py::arg("mask"), py::arg("method"),
             py::arg("mask_mode"), py::arg("fill"), py::arg("out"), py::arg("out_mask"), py::arg("n_threads"),
             py::arg("dark_inv_flat"),
             "As remap with pixels (I - dark) * inv_flat read by every sample (dark_inv_flat: float64 (H, W, 2)).");
}

}  // namespace xcca_bind
