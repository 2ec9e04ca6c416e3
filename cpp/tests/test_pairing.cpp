// pair_loki and pair_greedy against brute-force full-matrix versions, with ties, odd n and duplicate points.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include <cstdlib>

#include "xcca/pairing.hpp"

using xcca::pairing::PairResult;

static double d2(const std::vector<double>& x, std::size_t d, std::size_t i, std::size_t j) {
    double s = 0.0;
    for (std::size_t k = 0; k < d; ++k) {
        const double t = x[i * d + k] - x[j * d + k];
        s += t * t;
    }
    return s;
}

static PairResult brute_loki(const std::vector<double>& x, std::size_t n, std::size_t d) {
    std::vector<char> used(n, 0);
    PairResult r;
    for (std::size_t i = 0; i < n; ++i) {
        if (used[i]) continue;
        used[i] = 1;
        std::int64_t best = -1;
        double bd = 0;
        for (std::size_t j = 0; j < n; ++j)
            if (!used[j] && (best < 0 || d2(x, d, i, j) < bd)) best = static_cast<std::int64_t>(j), bd = d2(x, d, i, j);
        if (best < 0) { r.unpaired.push_back(static_cast<std::int64_t>(i)); continue; }
        used[static_cast<std::size_t>(best)] = 1;
        r.pairs.push_back(static_cast<std::int64_t>(i));
        r.pairs.push_back(best);
        r.distances.push_back(std::sqrt(bd));
    }
    return r;
}

static PairResult brute_greedy(const std::vector<double>& x, std::size_t n, std::size_t d) {
    // All edges sorted by (d2, i, j), taken greedily.
    struct E { double d2; std::int64_t i, j; };
    std::vector<E> edges;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j)
            edges.push_back(E{d2(x, d, i, j), static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)});
    std::sort(edges.begin(), edges.end(), [](const E& a, const E& b) {
        return a.d2 != b.d2 ? a.d2 < b.d2 : (a.i != b.i ? a.i < b.i : a.j < b.j);
    });
    std::vector<char> used(n, 0);
    PairResult r;
    for (const E& e : edges) {
        if (used[static_cast<std::size_t>(e.i)] || used[static_cast<std::size_t>(e.j)]) continue;
        used[static_cast<std::size_t>(e.i)] = used[static_cast<std::size_t>(e.j)] = 1;
        r.pairs.push_back(e.i);
        r.pairs.push_back(e.j);
        r.distances.push_back(std::sqrt(e.d2));
    }
    for (std::size_t i = 0; i < n; ++i)
        if (!used[i]) r.unpaired.push_back(static_cast<std::int64_t>(i));
    return r;
}

static bool same(const PairResult& a, const PairResult& b) {
    return a.pairs == b.pairs && a.distances == b.distances && a.unpaired == b.unpaired;
}

int main() {
    std::mt19937_64 rng(7);
    for (int trial = 0; trial < 40; ++trial) {
        // Sizes beyond a leaf (256 points) so that the tree's pruning and deletions are exercised.
        const std::size_t n = 2 + rng() % (trial < 30 ? 300 : 2500), d = 1 + rng() % 6;
        const bool ties = trial % 2 == 0;  // small integer grid: many exact ties and duplicate points
        std::vector<double> x(n * d);
        std::normal_distribution<double> g(0.0, 1.0);
        for (auto& v : x) v = ties ? static_cast<double>(rng() % 4) : g(rng);
        for (int threads : {1, 3}) {
            CHECK(same(xcca::pairing::pair_loki(x.data(), n, d, threads), brute_loki(x, n, d)));
            CHECK(same(xcca::pairing::pair_greedy(x.data(), n, d, threads), brute_greedy(x, n, d)));
        }
    }
    // High dimension (where the GEMM-style scan is chosen), through both engines; duplicated rows; huge scale.
    for (const char* engine : {"tree", "gemm", "dense"}) {
        setenv("XCCA_PAIRING_ENGINE", engine, 1);
        for (std::size_t d : {std::size_t{16}, std::size_t{40}, std::size_t{1031}}) {
            const std::size_t n = d > 100 ? 130 : 700;  // d = 1031: the dense engine and the rechecks of 4
            std::vector<double> x(n * d);
            std::normal_distribution<double> g(0.0, 1.0);
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t k = 0; k < d; ++k)
                    x[i * d + k] = i % 5 == 4 ? x[(i - 3) * d + k] : g(rng);  // every fifth row a duplicate
            CHECK(same(xcca::pairing::pair_loki(x.data(), n, d, 2), brute_loki(x, n, d)));
            CHECK(same(xcca::pairing::pair_greedy(x.data(), n, d, 2), brute_greedy(x, n, d)));
            std::vector<double> big(x);
            for (double& v : big) v *= 0x1p600;  // exact: same pairs, distances scaled
            const PairResult a = xcca::pairing::pair_greedy(x.data(), n, d, 1);
            const PairResult b = xcca::pairing::pair_greedy(big.data(), n, d, 1);
            CHECK(a.pairs == b.pairs && b.distances.size() == a.distances.size() &&
                  b.distances.back() == std::ldexp(a.distances.back(), 600));
        }
    }
    unsetenv("XCCA_PAIRING_ENGINE");
    // Nine shots at 0, one at 1e300: pairs (8, 9) at 1e300; greedy terminates.
    std::vector<double> far(10, 0.0);
    far[9] = 1e300;
    const PairResult g9 = xcca::pairing::pair_greedy(far.data(), 10, 1, 1);
    CHECK(g9.pairs.size() == 10 && g9.pairs[8] == 8 && g9.pairs[9] == 9 && g9.distances[4] == 1e300);
    const PairResult l9 = xcca::pairing::pair_loki(far.data(), 10, 1, 1);
    CHECK(l9.unpaired.empty() && l9.pairs[8] == 8 && l9.pairs[9] == 9);
    // Odd n leaves exactly one shot, reported rather than dropped.
    std::vector<double> three{0.0, 1.0, 10.0};
    const PairResult r = xcca::pairing::pair_loki(three.data(), 3, 1, 1);
    CHECK(r.pairs.size() == 2 && r.pairs[0] == 0 && r.pairs[1] == 1 && r.unpaired.size() == 1 && r.unpaired[0] == 2);
    // Bad input.
    std::vector<double> bad{0.0, NAN, 1.0};
    CHECK_THROWS(xcca::pairing::pair_loki(bad.data(), 3, 1, 1), std::invalid_argument);
    CHECK_THROWS(xcca::pairing::pair_greedy(three.data(), 1, 1, 1), std::invalid_argument);
    TEST_MAIN_RETURN();
}
