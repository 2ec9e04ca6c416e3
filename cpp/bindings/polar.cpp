// Bindings for the polar remap: array checks and dtype dispatch only; xcca.polar does the user-facing validation.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "xcca/polar.hpp"

namespace xcca_bind {

namespace {

using xcca::polar::PolarGrid;

void remap(const PolarGrid& g, const py::array& images, const py::object& mask_obj, int method, int mode,
           double fill, py::array out, const py::object& out_mask_obj, const py::object& n_threads_obj) {
    remap_checked(g, g.n_radii(), images, mask_obj, method, mode, fill, std::move(out), out_mask_obj, n_threads_obj);
}

}  // namespace

void register_polar(py::module_& m) {
    py::class_<PolarGrid>(m, "PolarGrid", "Precomputed polar geometry (use xcca.PolarGrid).")
        .def(py::init([](double cx, double cy, const py::array_t<double, py::array::c_style | py::array::forcecast>& radii,
                         const py::array_t<double, py::array::c_style | py::array::forcecast>& cos_phi,
                         const py::array_t<double, py::array::c_style | py::array::forcecast>& sin_phi,
                         std::size_t height, std::size_t width) {
                 try {
                     return new PolarGrid(cx, cy, vector_arg(radii, "radii"), vector_arg(cos_phi, "cos_phi"),
                                          vector_arg(sin_phi, "sin_phi"), height, width);
                 } catch (const std::invalid_argument& e) {
                     throw py::value_error(e.what());
                 }
             }),
             py::arg("cx"), py::arg("cy"), py::arg("radii"), py::arg("cos_phi"), py::arg("sin_phi"),
             py::arg("height"), py::arg("width"))
        .def_property_readonly("n_radii", &PolarGrid::n_radii)
        .def_property_readonly("nphi", &PolarGrid::nphi)
        .def_property_readonly("height", &PolarGrid::height)
        .def_property_readonly("width", &PolarGrid::width)
        .def("remap", &remap, py::arg("images"), py::arg("mask"), py::arg("method"), py::arg("mask_mode"),
             py::arg("fill"), py::arg("out"), py::arg("out_mask"), py::arg("n_threads"),
             "Remap a (N, H, W) stack into out (N, nr, nphi); out_mask (nr, nphi) bool or None.");
}

}  // namespace xcca_bind
