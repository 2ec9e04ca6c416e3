// Thread helpers shared by every kernel: resolving a thread count and a parallel loop over items.
// std::thread only (no OpenMP: an OpenMP runtime hangs in forked worker processes).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace xcca {

/// Number of cores this process may run on (CPU affinity mask), at least 1.
unsigned usable_cores() noexcept;

/// Thread count to use: `requested` if > 0, otherwise usable_cores(); never more than usable_cores() (more threads
/// than cores only add start-up cost and, for huge requests, exhaust the process's thread limit).
inline unsigned resolve_threads(int requested) noexcept {
    const unsigned cores = usable_cores();
    return requested > 0 ? std::min(static_cast<unsigned>(requested), cores) : cores;
}

/// Thrown by parallel_for when the operating system refuses to start a worker thread (after the threads already
/// started have finished and joined): an exception instead of std::terminate.
class thread_start_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Calls `body(begin, end)` over consecutive chunks of [0, n_items) of at most `grain` items, on up to
/// `n_threads` threads (0 = all usable cores; capped at the usable cores). Chunks are handed out dynamically; the
/// caller's thread works too. The first exception thrown by any chunk is rethrown after all threads have joined; a
/// thread that cannot be started raises thread_start_error (no chunk is processed after that).
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
    std::string start_failure;
    try {
        for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(run);
    } catch (const std::system_error& e) {  // e.g. EAGAIN: the process's thread limit is reached
        next.store(n_chunks, std::memory_order_relaxed);  // the running workers stop after their current chunk
        start_failure = e.what();
    }
    if (start_failure.empty()) run();
    for (auto& th : pool) th.join();
    if (!start_failure.empty())
        throw thread_start_error("xcca: cannot start worker thread " + std::to_string(pool.size() + 1) + " of " +
                                 std::to_string(workers) + " (" + start_failure + "); use fewer threads (n_threads)");
    if (error) std::rethrow_exception(error);
}

}  // namespace xcca
