// Bindings for the correlate kernels (filled in by the correlate issue).
#include "common.hpp"

namespace xcca_bind {

void register_correlate(py::module_& m) { (void)m; }

}  // namespace xcca_bind
