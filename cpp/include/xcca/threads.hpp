// Thread helpers shared by every kernel: resolving a thread count and a parallel loop over items.
// std::thread only (no OpenMP: an OpenMP runtime hangs in forked worker processes).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace xcca {

/// Number of cores this process may run on (CPU affinity mask), at least 1.
unsigned usable_cores() noexcept;

/// Thread count to use: `requested` if > 0, otherwise usable_cores().
inline unsigned resolve_threads(int requested) noexcept {
    return requested > 0 ? static_cast<unsigned>(requested) : usable_cores();
}

/// Calls `body(begin, end)` over consecutive chunks of [0, n_items) of at most `grain` items, on up to
/// `n_threads` threads (0 = all usable cores). Chunks are handed out dynamically; the caller's thread works too.
/// The first exception thrown by any chunk is rethrown after all threads have joined.
template <class Body>
void parallel_for(std::size_t n_items, int n_threads, std::size_t grain, Body&& body) {
    if (n_items == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t n_chunks = (n_items + grain - 1) / grain;
    const std::size_t workers = std::min<std::size_t>(resolve_threads(n_threads), n_chunks);
    if (workers <= 1) {
        body(std::size_t{0}, n_items);
        return;
    }
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&]() {
        for (;;) {
            const std::size_t chunk = next.fetch_add(1, std::memory_order_relaxed);
            if (chunk >= n_chunks) return;
            const std::size_t begin = chunk * grain;
            try {
                body(begin, std::min(n_items, begin + grain));
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                next.store(n_chunks, std::memory_order_relaxed);  // stop handing out work
            }
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(run);
    run();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace xcca
