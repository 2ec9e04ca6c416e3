// xcca._core: the pybind11 module over xcca::core.
#include "common.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "Compiled kernels of xcca (C++ core). Use the documented functions in the xcca package.";
    xcca_bind::register_core(m);
    xcca_bind::register_polar(m);
    xcca_bind::register_conic(m);
    xcca_bind::register_correlate(m);
    xcca_bind::register_pairing(m);
    xcca_bind::register_fit(m);
    xcca_bind::register_outliers(m);
    xcca_bind::register_runcorr(m);
    xcca_bind::register_cbf(m);
}
