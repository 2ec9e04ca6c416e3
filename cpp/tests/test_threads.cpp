// parallel_for visits every item exactly once, on any thread count, and propagates exceptions.
#include <atomic>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "xcca/threads.hpp"

int main() {
    CHECK(xcca::usable_cores() >= 1);
    CHECK(xcca::resolve_threads(3) == 3);
    CHECK(xcca::resolve_threads(0) == xcca::usable_cores());

    for (int threads : {0, 1, 2, 7}) {
        for (std::size_t n : {0, 1, 5, 1000, 12345}) {
            for (std::size_t grain : {0, 1, 64, 100000}) {
                std::vector<std::atomic<int>> seen(n);
                xcca::parallel_for(n, threads, grain, [&](std::size_t b, std::size_t e) {
                    CHECK(b < e && e <= n);
                    for (std::size_t i = b; i < e; ++i) seen[i].fetch_add(1);
                });
                bool once = true;
                for (auto& s : seen) once = once && s.load() == 1;
                CHECK(once);
            }
        }
    }
    bool caught = false;
    try {
        xcca::parallel_for(100, 4, 1, [](std::size_t b, std::size_t) {
            if (b == 37) throw std::runtime_error("boom");
        });
    } catch (const std::runtime_error&) {
        caught = true;
    }
    CHECK(caught);
    TEST_MAIN_RETURN();
}
