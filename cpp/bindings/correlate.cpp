// Bindings for the correlate kernels: array checks and conversion only; xcca.correlate does the broadcasting.
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "xcca/correlate.hpp"

namespace xcca_bind {
namespace {

namespace xc = xcca::correlate;

xc::Normalize normalize_arg(const py::object& o) {
    if (o.is_none()) return xc::Normalize::none;
    const std::string s = py::cast<std::string>(o);
    if (s == "mean") return xc::Normalize::mean;
    if (s == "std") return xc::Normalize::std_;
    throw py::value_error("normalize must be None, 'mean' or 'std', got '" + s + "'");
}

bool is_c_contig(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

// rings: (S, nq, n) C-contiguous float32/float64; mask: None or (M, n) C-contiguous bool/uint8.
template <class T>
xc::Rings<T> rings_arg(const py::array& rings, const py::object& mask) {
    if (rings.ndim() != 3 || !is_c_contig(rings)) throw py::value_error("rings must be a C-contiguous 3-d array");
    xc::Rings<T> r;
    r.data = static_cast<const T*>(rings.data());
    r.n_shots = static_cast<std::size_t>(rings.shape(0));
    r.nq = static_cast<std::size_t>(rings.shape(1));
    r.n = static_cast<std::size_t>(rings.shape(2));
    if (r.n == 0) throw py::value_error("rings: the ring length (last axis) must be >= 1");
    if (!mask.is_none()) {
        auto m = py::cast<py::array>(mask);
        if (m.ndim() != 2 || !is_c_contig(m) || m.itemsize() != 1 || m.shape(1) != rings.shape(2))
            throw py::value_error("mask must be a C-contiguous 2-d bool array with as many columns as rings");
        r.mask = static_cast<const std::uint8_t*>(m.data());
        r.n_mask_rows = static_cast<std::size_t>(m.shape(0));
    }
    return r;
}

std::vector<std::size_t> pairs_arg(const py::object& pairs, const char* name) {
    if (pairs.is_none()) return {};
    auto p = py::cast<py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>>(pairs);
    if (p.ndim() != 2 || p.shape(1) != 2) throw py::value_error(std::string(name) + " must have shape (npairs, 2)");
    std::vector<std::size_t> v(static_cast<std::size_t>(p.size()));
    const std::int64_t* d = p.data();
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (d[i] < 0) throw py::value_error(std::string(name) + ": negative index " + std::to_string(d[i]));
        v[i] = static_cast<std::size_t>(d[i]);
    }
    return v;
}

void check_out(const py::array& out, const py::array& rings, std::size_t expected) {
    if (!out.dtype().is(rings.dtype()) || !is_c_contig(out) || !out.writeable())
        throw py::value_error("out must be a writeable C-contiguous array of the rings' dtype");
    if (static_cast<std::size_t>(out.size()) != expected)
        throw py::value_error("out has " + std::to_string(out.size()) + " elements, expected " +
                              std::to_string(expected));
}

template <class T>
void run(const py::array& rings, const py::object& mask, const std::vector<std::size_t>& shot_pairs, bool diff,
         const std::vector<std::size_t>& q_pairs, bool cross, py::array& out, const xc::Options& opt) {
    const xc::Rings<T> r = rings_arg<T>(rings, mask);
    const std::size_t units = diff ? shot_pairs.size() / 2 : r.n_shots;
    const std::size_t rows = cross ? q_pairs.size() / 2 : r.nq;
    check_out(out, rings, (opt.average ? 1 : units) * rows * r.n);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    try {
        if (diff)
            xc::difference_correlate(r, shot_pairs.data(), units, cross ? q_pairs.data() : nullptr, rows, o, opt);
        else if (cross)
            xc::cross_correlate(r, q_pairs.data(), rows, o, opt);
        else
            xc::autocorrelate(r, o, opt);
    } catch (const std::out_of_range& e) {
        py::gil_scoped_acquire acquire;
        throw py::value_error(e.what());
    } catch (const std::invalid_argument& e) {
        py::gil_scoped_acquire acquire;
        throw py::value_error(e.what());
    }
}

void correlate(const py::array& rings, const py::object& mask, const py::object& shot_pairs,
               const py::object& q_pairs, const py::object& normalize, bool average, bool raw_sums, py::array out,
               const py::object& n_threads) {
    xc::Options opt;
    opt.normalize = normalize_arg(normalize);
    opt.average = average;
    opt.raw_sums = raw_sums;
    opt.n_threads = n_threads_arg(n_threads);
    const auto sp = pairs_arg(shot_pairs, "pairs");
    const auto qp = pairs_arg(q_pairs, "q_pairs");
    const bool diff = !shot_pairs.is_none(), cross = !q_pairs.is_none();
    const char kind = rings.dtype().kind();
    if (kind == 'f' && rings.itemsize() == 4)
        run<float>(rings, mask, sp, diff, qp, cross, out, opt);
    else if (kind == 'f' && rings.itemsize() == 8)
        run<double>(rings, mask, sp, diff, qp, cross, out, opt);
    else
        throw py::type_error("rings must be float32 or float64");
}

}  // namespace

void register_correlate(py::module_& m) {
    m.def("correlate", &correlate, py::arg("rings"), py::arg("mask"), py::arg("shot_pairs"), py::arg("q_pairs"),
          py::arg("normalize"), py::arg("average"), py::arg("raw_sums"), py::arg("out"), py::arg("n_threads"),
          "Masked circular correlations of rings (S, nq, n) into out; see xcca.correlate. Shot pairs given: "
          "difference correlations; q pairs given: cross-correlations, else autocorrelations.");
    m.def(
        "mask_pair_counts",
        [](py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> ma,
           py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> mb) {
            if (ma.ndim() != 1 || mb.ndim() != 1 || ma.size() != mb.size())
                throw py::value_error("mask_pair_counts: ma and mb must be 1-d of the same length");
            py::array_t<std::int64_t> out(ma.size());
            const std::size_t n = static_cast<std::size_t>(ma.size());
            const std::uint8_t *a = ma.data(), *b = mb.data();
            std::int64_t* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                xc::mask_pair_counts(a, b, n, o);
            }
            return out;
        },
        py::arg("ma"), py::arg("mb"), "Exact counts sum_j ma_j mb_{(j+k) % n} (nonzero = valid).");
}

}  // namespace xcca_bind
