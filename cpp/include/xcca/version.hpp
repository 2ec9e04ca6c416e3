#pragma once

namespace xcca {
/// The library version, "MAJOR.MINOR.PATCH".
const char* version() noexcept;
}  // namespace xcca
