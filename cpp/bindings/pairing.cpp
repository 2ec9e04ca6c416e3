// Bindings for the pairing kernels (filled in by the pairing issue).
#include "common.hpp"

namespace xcca_bind {

void register_pairing(py::module_& m) { (void)m; }

}  // namespace xcca_bind
