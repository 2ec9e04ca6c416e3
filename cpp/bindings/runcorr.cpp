// Bindings for the run correlator kernels (xcca::runcorr): array checks and conversion only; xcca.runcorr drives
// them. Also installs SciPy's BLAS (scipy.linalg.cython_blas function pointers) into the core.
#include <dlfcn.h>
#include <link.h>

#include <complex>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "xcca/runcorr.hpp"

namespace xcca_bind {
namespace {

namespace xr = xcca::runcorr;

bool c_contig(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

void* capsule_ptr(const py::object& cap, const char* what) {
    PyObject* o = cap.ptr();
    if (!PyCapsule_CheckExact(o)) throw py::type_error(std::string(what) + " must be a PyCapsule");
    void* p = PyCapsule_GetPointer(o, PyCapsule_GetName(o));
    if (!p) throw py::error_already_set();
    return p;
}

// OpenBLAS's per-thread thread-count control in the library that defines SciPy's BLAS symbols (scipy_zherk_), so
// the call goes to the same OpenBLAS the capsules use (NumPy's ILP64 copy has other names).
int find_threads_local(dl_phdr_info* info, std::size_t, void* out) {
    if (!info->dlpi_name || !info->dlpi_name[0]) return 0;
    void* h = dlopen(info->dlpi_name, RTLD_NOLOAD | RTLD_LAZY);
    if (!h) return 0;
    void* z = dlsym(h, "scipy_zherk_");
    void* f = z ? dlsym(h, "openblas_set_num_threads_local") : nullptr;
    dlclose(h);
    if (f) {
        *static_cast<void**>(out) = f;
        return 1;
    }
    return 0;
}

py::dict blas_info() {
    const xr::Blas b = xr::current_blas();
    py::dict d;
    d["name"] = b.name;
    d["threads_local"] = b.set_threads_local != nullptr;
    return d;
}

py::dict use_blas(const py::object& zherk, const py::object& cherk, const py::object& zgemm, const py::object& cgemm,
                  const std::string& name) {
    xr::Blas b;
    b.zherk = reinterpret_cast<xr::zherk_fn>(capsule_ptr(zherk, "zherk"));
    b.cherk = reinterpret_cast<xr::cherk_fn>(capsule_ptr(cherk, "cherk"));
    b.zgemm = reinterpret_cast<xr::zgemm_fn>(capsule_ptr(zgemm, "zgemm"));
    b.cgemm = reinterpret_cast<xr::cgemm_fn>(capsule_ptr(cgemm, "cgemm"));
    void* f = nullptr;
    dl_iterate_phdr(find_threads_local, &f);
    b.set_threads_local = reinterpret_cast<xr::threads_local_fn>(f);
    b.name = name;
    xr::set_blas(b);
    return blas_info();
}

template <class F>
void translate(F&& f) {
    try {
        f();
    } catch (const std::out_of_range& e) {
        throw py::value_error(e.what());
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
}

template <class C>
C* cplx_arg(const py::object& o, int ndim, const char* what) {
    if (o.is_none()) return nullptr;
    auto a = py::cast<py::array>(o);
    if (!py::isinstance<py::array_t<C>>(a) || a.ndim() != ndim || !c_contig(a) || !a.writeable())
        throw py::value_error(std::string(what) + ": expected a writeable C-contiguous complex array of " +
                              std::to_string(ndim) + " dims");
    return static_cast<C*>(a.mutable_data());
}

std::vector<std::int64_t> int_arg(const py::object& o) {
    auto p = py::cast<py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>>(o);
    return std::vector<std::int64_t>(p.data(), p.data() + p.size());
}

// rings: None or (S, nq, n) float32/float64 C-contiguous; mask: None or (rows, n) uint8/bool C-contiguous.
template <class T>
std::size_t spectra_t(const py::object& rings, const py::object& mask, std::size_t n_shots, std::size_t nq,
                      std::size_t n, const std::vector<std::int64_t>& units, bool diff,
                      const std::vector<std::int64_t>& qsel, const py::object& spec, const py::object& mspec,
                      int n_threads) {
    xr::SpecJob<T> j;
    if (!rings.is_none()) {
        auto r = py::cast<py::array>(rings);
        if (r.ndim() != 3 || !c_contig(r) || static_cast<std::size_t>(r.shape(0)) != n_shots ||
            static_cast<std::size_t>(r.shape(1)) != nq || static_cast<std::size_t>(r.shape(2)) != n)
            throw py::value_error("rings must be C-contiguous of shape (n_shots, nq, n)");
        j.data = static_cast<const T*>(r.data());
    }
    j.n_shots = n_shots;
    j.nq = nq;
    j.n = n;
    if (!mask.is_none()) {
        auto m = py::cast<py::array>(mask);
        if (m.ndim() != 2 || !c_contig(m) || m.itemsize() != 1 || static_cast<std::size_t>(m.shape(1)) != n)
            throw py::value_error("mask must be a C-contiguous 2-d bool array (rows, n)");
        j.mask = static_cast<const std::uint8_t*>(m.data());
        j.n_mask_rows = static_cast<std::size_t>(m.shape(0));
    }
    j.diff = diff;
    j.K = diff ? units.size() / 2 : units.size();
    j.units = units.data();
    j.qsel = qsel.data();
    j.nqu = qsel.size();
    const std::size_t expect = (n / 2 + 1) * j.K * j.nqu;
    j.spec = cplx_arg<std::complex<T>>(spec, 3, "spec");
    j.mspec = cplx_arg<std::complex<double>>(mspec, 3, "mspec");
    if (j.spec && static_cast<std::size_t>(py::cast<py::array>(spec).size()) != expect)
        throw py::value_error("spec must have shape (n // 2 + 1, K, nqu)");
    if (j.mspec && static_cast<std::size_t>(py::cast<py::array>(mspec).size()) != expect)
        throw py::value_error("mspec must have shape (n // 2 + 1, K, nqu)");
    std::size_t bad = 0;
    py::gil_scoped_release release;
    translate([&] { bad = xr::spectra(j, n_threads); });
    return bad;
}

std::size_t spectra(const py::object& rings, const py::object& mask, std::size_t n_shots, std::size_t nq,
                    std::size_t n, const py::object& units, bool diff, const py::object& qsel,
                    const py::object& spec, const py::object& mspec, const py::object& dtype,
                    const py::object& n_threads) {
    const auto u = int_arg(units);
    const auto q = int_arg(qsel);
    const int nt = n_threads_arg(n_threads);
    const std::string dt = py::str(dtype);
    if (dt == "float32") return spectra_t<float>(rings, mask, n_shots, nq, n, u, diff, q, spec, mspec, nt);
    if (dt == "float64") return spectra_t<double>(rings, mask, n_shots, nq, n, u, diff, q, spec, mspec, nt);
    throw py::type_error("dtype must be float32 or float64");
}

// spec: (nh, K, nqu) complex; acc: (nh, nqu, nqu) complex of the same precision (triangle `lower` or upper), or the
// packed (nh, nqu, nqu + 1) layout (upper triangle at offset 0, lower at offset 1: see xcca/runcorr.hpp).
template <class C>
void herk_t(py::array spec, std::size_t c0, std::size_t c1, double alpha, py::array acc, int nt, bool lower) {
    const auto* s = cplx_arg<C>(spec, 3, "spec");
    auto* a = cplx_arg<C>(acc, 3, "acc");
    const bool packed = acc.shape(2) == spec.shape(2) + 1;
    if (acc.shape(0) != spec.shape(0) || acc.shape(1) != spec.shape(2) || !(packed || acc.shape(2) == spec.shape(2)))
        throw py::value_error("acc must have shape (nh, nqu, nqu) or packed (nh, nqu, nqu + 1) matching spec "
                              "(nh, K, nqu)");
    const std::size_t nh = spec.shape(0), K = spec.shape(1), nqu = spec.shape(2);
    const std::size_t ld = packed ? nqu + 1 : nqu, off = packed && lower ? 1 : 0;
    py::gil_scoped_release release;
    translate([&] { xr::herk_update(s, nh, K, nqu, c0, c1, alpha, a, nt, lower ? 'L' : 'U', ld, off); });
}

void herk(py::array spec, std::size_t c0, std::size_t c1, double alpha, py::array acc, const py::object& n_threads,
          bool lower) {
    const int nt = n_threads_arg(n_threads);
    if (py::isinstance<py::array_t<std::complex<double>>>(spec))
        herk_t<std::complex<double>>(spec, c0, c1, alpha, acc, nt, lower);
    else
        herk_t<std::complex<float>>(spec, c0, c1, alpha, acc, nt, lower);
}

template <class C>
void gemm_t(py::array sa, py::array sb, std::size_t c0, std::size_t c1, double alpha, py::array acc, int nt) {
    const auto* a = cplx_arg<C>(sa, 3, "spec_a");
    const auto* b = cplx_arg<C>(sb, 3, "spec_b");
    auto* c = cplx_arg<C>(acc, 3, "acc");
    for (int d = 0; d < 3; ++d)
        if (sa.shape(d) != sb.shape(d)) throw py::value_error("spec_a and spec_b must have the same shape");
    if (acc.shape(0) != sa.shape(0) || acc.shape(1) != sa.shape(2) || acc.shape(2) != sa.shape(2))
        throw py::value_error("acc must have shape (nh, nqu, nqu)");
    const std::size_t nh = sa.shape(0), K = sa.shape(1), nqu = sa.shape(2);
    py::gil_scoped_release release;
    translate([&] { xr::gemm_update(a, b, nh, K, nqu, c0, c1, alpha, c, nt); });
}

void gemm(py::array sa, py::array sb, std::size_t c0, std::size_t c1, double alpha, py::array acc,
          const py::object& n_threads) {
    const int nt = n_threads_arg(n_threads);
    if (py::isinstance<py::array_t<std::complex<double>>>(sa))
        gemm_t<std::complex<double>>(sa, sb, c0, c1, alpha, acc, nt);
    else
        gemm_t<std::complex<float>>(sa, sb, c0, c1, alpha, acc, nt);
}

template <class C>
void lag_sums_t(py::array acc, std::size_t n, bool upper, const std::vector<std::int64_t>& p, py::array out, int nt) {
    const auto* a = cplx_arg<C>(acc, 3, "acc");
    const std::size_t P = p.size() / 2;
    if (!py::isinstance<py::array_t<double>>(out) || !c_contig(out) || !out.writeable() ||
        static_cast<std::size_t>(out.size()) != P * n)
        throw py::value_error("out must be a writeable C-contiguous float64 array (npairs, n)");
    auto* o = static_cast<double*>(out.mutable_data());
    const std::size_t nh = acc.shape(0), nqu = acc.shape(1);
    py::gil_scoped_release release;
    translate([&] { xr::lag_sums(a, nh, nqu, n, upper, p.data(), P, o, nt); });
}

void lag_sums(py::array acc, std::size_t n, bool upper, const py::object& pairs, py::array out,
              const py::object& n_threads) {
    const int nt = n_threads_arg(n_threads);
    const auto p = int_arg(pairs);
    if (py::isinstance<py::array_t<std::complex<double>>>(acc))
        lag_sums_t<std::complex<double>>(acc, n, upper, p, out, nt);
    else
        lag_sums_t<std::complex<float>>(acc, n, upper, p, out, nt);
}

// num: (B, nh, nqu, nqu) complex (float32 or float64), cnt: (B, nh, nqu, nqu) complex128; or num = cnt, one packed
// (B, nh, nqu, nqu + 1) complex128 array (xcca/runcorr.hpp); outputs float64 / int64.
template <class C>
double pooled_result_t(py::array num, py::array cnt, std::size_t n, bool upper, const std::vector<std::int64_t>& p,
                       bool jackknife, py::array corr, const py::object& err_o, py::array counts,
                       const py::object& rep_o, int nt) {
    using T = typename C::value_type;
    const auto* a = cplx_arg<C>(num, 4, "num");
    const auto* c = cplx_arg<std::complex<double>>(cnt, 4, "cnt");
    for (int d = 0; d < 4; ++d)
        if (num.shape(d) != cnt.shape(d)) throw py::value_error("num and cnt must have the same shape");
    const bool packed = num.shape(3) == num.shape(2) + 1;
    if (!(packed || num.shape(2) == num.shape(3)))
        throw py::value_error("num must have shape (blocks, nh, nqu, nqu) or packed (blocks, nh, nqu, nqu + 1)");
    if (packed && (static_cast<const void*>(a) != static_cast<const void*>(c) || !upper))
        throw py::value_error("a packed accumulator must be passed as both num and cnt, with upper=True");
    const std::size_t B = num.shape(0), nh = num.shape(1), nqu = num.shape(2), P = p.size() / 2;
    auto chk = [&](py::array& x, bool f64, std::size_t size, const char* what) {
        const bool ok = f64 ? py::isinstance<py::array_t<double>>(x) : py::isinstance<py::array_t<std::int64_t>>(x);
        if (!ok || !c_contig(x) || !x.writeable() || static_cast<std::size_t>(x.size()) != size)
            throw py::value_error(std::string(what) + ": wrong dtype, layout or size");
    };
    chk(corr, true, P * n, "corr");
    chk(counts, false, P * n, "counts");
    // err and rep are optional (None: not computed).
    double* pe = nullptr;
    double* pr = nullptr;
    if (!err_o.is_none()) {
        py::array err = err_o.cast<py::array>();
        chk(err, true, P * n, "err");
        pe = static_cast<double*>(err.mutable_data());
    }
    if (!rep_o.is_none()) {
        py::array rep = rep_o.cast<py::array>();
        chk(rep, true, B * P * n, "rep");
        pr = static_cast<double*>(rep.mutable_data());
    }
    auto* pc = static_cast<double*>(corr.mutable_data());
    auto* pn = static_cast<std::int64_t*>(counts.mutable_data());
    double dev = 0;
    py::gil_scoped_release release;
    translate([&] {
        dev = xr::pooled_result<T>(a, c, B, nh, nqu, n, upper, p.data(), P, jackknife, pc, pe, pn, pr, nt, packed);
    });
    return dev;
}

double pooled_result(py::array num, py::array cnt, std::size_t n, bool upper, const py::object& pairs,
                     bool jackknife, py::array corr, const py::object& err, py::array counts, const py::object& rep,
                     const py::object& n_threads) {
    const int nt = n_threads_arg(n_threads);
    const auto p = int_arg(pairs);
    if (py::isinstance<py::array_t<std::complex<double>>>(num))
        return pooled_result_t<std::complex<double>>(num, cnt, n, upper, p, jackknife, corr, err, counts, rep, nt);
    return pooled_result_t<std::complex<float>>(num, cnt, n, upper, p, jackknife, corr, err, counts, rep, nt);
}

template <class C>
void per_shot_t(py::array spec, py::array mspec, std::size_t n, std::size_t c0, std::size_t c1,
                const std::vector<std::int64_t>& p, py::array sum, py::array nvalid, py::array counts, int nt) {
    using T = typename C::value_type;
    const auto* s = cplx_arg<C>(spec, 3, "spec");
    const auto* m = cplx_arg<std::complex<double>>(mspec, 3, "mspec");
    const std::size_t P = p.size() / 2;
    auto chk = [&](py::array& a, bool f64, const char* what) {
        const bool ok = f64 ? py::isinstance<py::array_t<double>>(a) : py::isinstance<py::array_t<std::int64_t>>(a);
        if (!ok || !c_contig(a) || !a.writeable() || static_cast<std::size_t>(a.size()) != P * n)
            throw py::value_error(std::string(what) + ": wrong dtype or shape (npairs, n)");
    };
    chk(sum, true, "sum");
    chk(nvalid, false, "nvalid");
    chk(counts, false, "counts");
    if (mspec.shape(0) != spec.shape(0) || mspec.shape(2) != spec.shape(2))
        throw py::value_error("mspec must have shape (nh, K or 1, nqu)");
    const std::size_t nh = spec.shape(0), K = spec.shape(1), nqu = spec.shape(2), Km = mspec.shape(1);
    auto* ps = static_cast<double*>(sum.mutable_data());
    auto* pn = static_cast<std::int64_t*>(nvalid.mutable_data());
    auto* pc = static_cast<std::int64_t*>(counts.mutable_data());
    py::gil_scoped_release release;
    translate([&] {
        xr::per_shot_update<T>(s, K, m, Km, nh, nqu, n, c0, c1, p.data(), P, ps, pn, pc, nt);
    });
}

void per_shot(py::array spec, py::array mspec, std::size_t n, std::size_t c0, std::size_t c1,
              const py::object& pairs, py::array sum, py::array nvalid, py::array counts,
              const py::object& n_threads) {
    const int nt = n_threads_arg(n_threads);
    const auto p = int_arg(pairs);
    if (py::isinstance<py::array_t<std::complex<double>>>(spec))
        per_shot_t<std::complex<double>>(spec, mspec, n, c0, c1, p, sum, nvalid, counts, nt);
    else
        per_shot_t<std::complex<float>>(spec, mspec, n, c0, c1, p, sum, nvalid, counts, nt);
}

}  // namespace

void register_runcorr(py::module_& m) {
    m.def("runcorr_use_blas", &use_blas, py::arg("zherk"), py::arg("cherk"), py::arg("zgemm"), py::arg("cgemm"),
          py::arg("name"), "Install BLAS routines (scipy.linalg.cython_blas capsules) for the run correlator.");
    m.def("runcorr_reset_blas", [] { xr::reset_blas(); return blas_info(); }, "Back to the build's default BLAS.");
    m.def("runcorr_blas_info", &blas_info, "The BLAS the run correlator calls: name, per-thread control.");
    m.def("runcorr_spectra", &spectra, py::arg("rings"), py::arg("mask"), py::arg("n_shots"), py::arg("nq"),
          py::arg("n"), py::arg("units"), py::arg("diff"), py::arg("qsel"), py::arg("spec"), py::arg("mspec"),
          py::arg("dtype"), py::arg("n_threads"),
          "Chunk spectra (nh, K, nqu) of m a and m; returns the number of non-finite valid samples.");
    m.def("runcorr_herk", &herk, py::arg("spec"), py::arg("c0"), py::arg("c1"), py::arg("alpha"), py::arg("acc"),
          py::arg("n_threads"), py::arg("lower") = false,
          "acc[h] (upper, or lower with lower=True; packed acc (nh, nqu, nqu + 1): upper at offset 0, lower at "
          "offset 1) += alpha spec[h][:, c0:c1] spec[h][:, c0:c1]^H.");
    m.def("runcorr_gemm", &gemm, py::arg("spec_a"), py::arg("spec_b"), py::arg("c0"), py::arg("c1"), py::arg("alpha"),
          py::arg("acc"), py::arg("n_threads"), "acc[h] += alpha spec_a[h][:, c0:c1] spec_b[h][:, c0:c1]^H.");
    m.def("runcorr_lag_sums", &lag_sums, py::arg("acc"), py::arg("n"), py::arg("upper"), py::arg("pairs"),
          py::arg("out"), py::arg("n_threads"), "Lag-domain sums of accumulator pairs into out (npairs, n).");
    m.def("runcorr_pooled_result", &pooled_result, py::arg("num"), py::arg("cnt"), py::arg("n"), py::arg("upper"),
          py::arg("pairs"), py::arg("jackknife"), py::arg("corr"), py::arg("err"), py::arg("counts"), py::arg("rep"),
          py::arg("n_threads"),
          "Pooled estimator results (correlation, jackknife error, counts, replicates; err and rep may be None: "
          "not computed) in one pass; returns the largest count deviation from an integer.");
    m.def("runcorr_per_shot", &per_shot, py::arg("spec"), py::arg("mspec"), py::arg("n"), py::arg("c0"),
          py::arg("c1"), py::arg("pairs"), py::arg("sum"), py::arg("nvalid"), py::arg("counts"),
          py::arg("n_threads"), "Per-shot estimator accumulation over columns [c0, c1).");
}

}  // namespace xcca_bind
