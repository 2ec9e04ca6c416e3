// The library reports the version CMake built it with.
#include <cstring>

#include "check.hpp"
#include "xcca/version.hpp"

int main() {
    CHECK(std::strcmp(xcca::version(), XCCA_TEST_EXPECTED_VERSION) == 0);
    TEST_MAIN_RETURN();
}
