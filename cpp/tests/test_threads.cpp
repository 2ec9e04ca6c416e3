// parallel_for visits every item exactly once, on any thread count, and propagates exceptions; thread counts are
// capped at the usable cores; a thread that cannot be started is an exception, not std::terminate.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "check.hpp"
#include "xcca/threads.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define XCCA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define XCCA_TEST_ASAN 1
#endif
#endif

namespace {

#if defined(__linux__) && !defined(XCCA_TEST_ASAN)
// Virtual memory of this process in bytes (VmSize), 0 if unknown.
long long vm_size() {
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long long kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmSize:", 7) == 0) kb = std::atoll(line + 7);
    std::fclose(f);
    return kb * 1024;
}

// In a child process whose address space cannot hold another thread stack: parallel_for must throw
// thread_start_error (the old code called std::terminate). Returns true when the child saw the exception.
bool thread_start_failure_is_an_exception() {
    const pid_t pid = fork();
    if (pid < 0) return true;  // cannot test here
    if (pid == 0) {
        const long long vm = vm_size();
        if (vm <= 0) _exit(0);
        struct rlimit lim;
        lim.rlim_cur = lim.rlim_max = static_cast<rlim_t>(vm + (64 << 10));  // 64 KiB more: less than any thread stack
        if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(0);
        int code = 2;
        try {
            xcca::parallel_for(1000, 2, 1, [](std::size_t, std::size_t) {});
            code = 3;  // a thread started after all (e.g. a reused stack): cannot test here, not a failure
        } catch (const xcca::thread_start_error&) {
            code = 0;
        } catch (...) {
            code = 1;
        }
        _exit(code == 3 ? 0 : code);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status)) std::fprintf(stderr, "child died (signal %d)\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
#endif

}  // namespace

int main() {
    const unsigned cores = xcca::usable_cores();
    CHECK(cores >= 1);
#if defined(__linux__) && !defined(XCCA_TEST_ASAN)
    // First, before any thread exists: glibc caches the stacks of finished threads, and a forked child would reuse
    // them instead of mapping a new one.
    if (cores >= 2) CHECK(thread_start_failure_is_an_exception());
#endif
    CHECK(xcca::resolve_threads(1) == 1);
    CHECK(xcca::resolve_threads(3) == std::min(3u, cores));
    CHECK(xcca::resolve_threads(0) == cores);
    CHECK(xcca::resolve_threads(1000000) == cores);  // capped: one OS thread per chunk would exhaust the limit

    for (int threads : {0, 1, 2, 3, 7, 1000000}) {
        for (std::size_t n : {0, 1, 2, 5, 1000, 12345}) {
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
    // A huge request on many chunks starts at most `cores` threads (the caller included).
    {
        std::mutex mu;
        std::vector<std::thread::id> ids;
        xcca::parallel_for(5000, 1000000, 1, [&](std::size_t, std::size_t) {
            std::lock_guard<std::mutex> lock(mu);
            const auto id = std::this_thread::get_id();
            if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
        });
        CHECK(ids.size() <= cores);
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
