#include "xcca/version.hpp"

namespace xcca {
const char* version() noexcept { return XCCA_VERSION_STRING; }
}  // namespace xcca
