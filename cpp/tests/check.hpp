// Minimal assertion helper for the C++ tests: CHECK records failures, main returns their count.
#pragma once

#include <cmath>
#include <cstdio>

namespace xcca_test {
inline int& failures() {
    static int n = 0;
    return n;
}
inline bool close(double a, double b, double rtol, double atol) {
    return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}
}  // namespace xcca_test

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++xcca_test::failures();                                                 \
        }                                                                            \
    } while (0)

#define CHECK_CLOSE(a, b, rtol, atol)                                                             \
    do {                                                                                          \
        const double va_ = (a), vb_ = (b);                                                        \
        if (!xcca_test::close(va_, vb_, (rtol), (atol))) {                                        \
            std::fprintf(stderr, "%s:%d: CHECK_CLOSE failed: %s = %.17g vs %s = %.17g\n", __FILE__, \
                         __LINE__, #a, va_, #b, vb_);                                             \
            ++xcca_test::failures();                                                              \
        }                                                                                         \
    } while (0)

#define CHECK_THROWS(expr, exc)            \
    do {                                   \
        bool thrown_ = false;              \
        try {                              \
            (void)(expr);                  \
        } catch (const exc&) {             \
            thrown_ = true;                \
        }                                  \
        CHECK(thrown_ && "throws " #exc); \
    } while (0)

#define TEST_MAIN_RETURN()                                                    \
    do {                                                                      \
        if (xcca_test::failures()) std::fprintf(stderr, "%d failure(s)\n", xcca_test::failures()); \
        return xcca_test::failures() ? 1 : 0;                                 \
    } while (0)
