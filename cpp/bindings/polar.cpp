// Bindings for the polar kernels (filled in by the polar issue).
#include "common.hpp"

namespace xcca_bind {

void register_polar(py::module_& m) { (void)m; }

}  // namespace xcca_bind
