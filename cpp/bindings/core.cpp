// Library-wide facts: version and usable cores.
#include "common.hpp"
#include "xcca/threads.hpp"
#include "xcca/version.hpp"

namespace xcca_bind {

void register_core(py::module_& m) {
    m.def("version", &xcca::version, "Version of the compiled xcca core.");
    m.def("usable_cores", &xcca::usable_cores, "Cores this process may run on (what n_threads=None uses).");
}

}  // namespace xcca_bind
