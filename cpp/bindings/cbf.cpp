// Bindings for the CBF byte-offset decoder and MD5 (xcca/cbf.hpp): buffer checks and conversion only.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"
#include "xcca/cbf.hpp"

namespace xcca_bind {

namespace {

// A read-only view of a bytes-like object's bytes [offset, offset + size) (size < 0: to the end).
struct ByteView {
    py::buffer_info info;
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
};

ByteView byte_view(const py::buffer& buf, py::ssize_t offset, py::ssize_t size, const char* name) {
    ByteView v{buf.request(), nullptr, 0};
    if (v.info.itemsize != 1 || v.info.ndim != 1 || (v.info.ndim == 1 && v.info.strides[0] != 1))
        throw py::type_error(std::string(name) + " must be a contiguous bytes-like object");
    const py::ssize_t total = v.info.size;
    if (offset < 0 || offset > total)
        throw py::value_error(std::string(name) + ": offset " + std::to_string(offset) + " outside [0, " +
                              std::to_string(total) + "]");
    if (size < 0) size = total - offset;
    if (size > total - offset)
        throw py::value_error(std::string(name) + ": " + std::to_string(size) + " bytes from offset " +
                              std::to_string(offset) + " exceed its " + std::to_string(total) + " bytes");
    v.data = static_cast<const std::uint8_t*>(v.info.ptr) + offset;
    v.size = static_cast<std::size_t>(size);
    return v;
}

py::bytes md5_py(const py::buffer& data) {
    const ByteView v = byte_view(data, 0, -1, "data");
    xcca::Md5Digest d;
    {
        py::gil_scoped_release release;
        d = xcca::md5(v.data, v.size);
    }
    return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
}

// The raw 16-byte digest `expected_md5` in `store`, or null for None.
const xcca::Md5Digest* expected_arg(const py::object& expected_md5, xcca::Md5Digest& store, const char* fn) {
    if (expected_md5.is_none()) return nullptr;
    const std::string e = py::bytes(expected_md5);
    if (e.size() != 16) throw py::value_error(std::string(fn) + ": expected_md5 must be 16 bytes (a raw digest)");
    std::memcpy(store.data(), e.data(), 16);
    return &store;
}

py::tuple result_tuple(const xcca::CbfDecodeResult& r) {
    py::object digest = r.md5_checked ? py::object(py::bytes(reinterpret_cast<const char*>(r.digest.data()), 16))
                                      : py::object(py::none());
    return py::make_tuple(static_cast<int>(r.status), std::string(xcca::cbf_status_message(r.status)), r.values,
                          r.bytes_used, digest);
}

template <class T>
py::tuple decode_impl(const ByteView& v, py::array out, const xcca::Md5Digest* expected, int threads) {
    auto o = py::array_t<T, py::array::c_style>::ensure(out);
    if (!o || !o.writeable() || o.ptr() != out.ptr())
        throw py::type_error("cbf_byte_offset: out must be a writeable C-contiguous native-endian integer array");
    xcca::CbfDecodeResult r;
    {
        py::gil_scoped_release release;
        r = xcca::decode_byte_offset<T>(v.data, v.size, o.mutable_data(), static_cast<std::size_t>(o.size()),
                                        expected, threads);
    }
    return result_tuple(r);
}

py::tuple decode_py(const py::buffer& data, py::ssize_t offset, py::ssize_t size, py::array out,
                    const py::object& expected_md5, const py::object& n_threads) {
    const int threads = n_threads_arg(n_threads);
    const ByteView v = byte_view(data, offset, size, "data");
    xcca::Md5Digest expected{};
    const xcca::Md5Digest* exp = expected_arg(expected_md5, expected, "cbf_byte_offset");
    const py::dtype dt = out.dtype();
    if (dt.kind() != 'i' && dt.kind() != 'u')
        throw py::type_error("cbf_byte_offset: out must be an integer array");
    const bool u = dt.kind() == 'u';
    switch (dt.itemsize()) {
        case 1: return u ? decode_impl<std::uint8_t>(v, out, exp, threads) : decode_impl<std::int8_t>(v, out, exp, threads);
        case 2: return u ? decode_impl<std::uint16_t>(v, out, exp, threads) : decode_impl<std::int16_t>(v, out, exp, threads);
        case 4: return u ? decode_impl<std::uint32_t>(v, out, exp, threads) : decode_impl<std::int32_t>(v, out, exp, threads);
        case 8: return u ? decode_impl<std::uint64_t>(v, out, exp, threads) : decode_impl<std::int64_t>(v, out, exp, threads);
        default: throw py::type_error("cbf_byte_offset: unsupported output dtype");
    }
}

// A writeable C-contiguous array of `dtype` with exactly `shape`, else a TypeError/ValueError naming `name`.
template <class T>
T* out_arg(py::array& a, std::vector<py::ssize_t> shape, const char* name) {
    const std::string what = std::string("cbf_byte_offset_bin_max: ") + name;
    if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) || !a.writeable() ||
        !a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(what + " must be a writeable C-contiguous " + std::string(py::str(py::dtype::of<T>())) +
                             " array");
    if (static_cast<std::size_t>(a.ndim()) != shape.size() ||
        !std::equal(shape.begin(), shape.end(), a.shape()))
        throw py::value_error(what + " has the wrong shape for the frame and factor");
    return static_cast<T*>(a.mutable_data());
}

py::tuple bin_max_py(const py::buffer& data, py::ssize_t offset, py::ssize_t size, py::ssize_t height,
                     py::ssize_t width, py::ssize_t factor, py::array binned, py::array empty_rows,
                     py::array empty_cols, const py::object& expected_md5, const py::object& n_threads) {
    const int threads = n_threads_arg(n_threads);
    const ByteView v = byte_view(data, offset, size, "data");
    if (height <= 0 || width <= 0 || factor <= 0)
        throw py::value_error("cbf_byte_offset_bin_max: height, width and factor must be positive");
    xcca::Md5Digest expected{};
    const xcca::Md5Digest* exp = expected_arg(expected_md5, expected, "cbf_byte_offset_bin_max");
    auto* b = out_arg<std::int32_t>(binned, {(height + factor - 1) / factor, (width + factor - 1) / factor}, "binned");
    auto* er = out_arg<std::uint8_t>(empty_rows, {height}, "empty_rows");
    auto* ec = out_arg<std::uint8_t>(empty_cols, {width}, "empty_cols");
    xcca::CbfDecodeResult r;
    {
        py::gil_scoped_release release;
        r = xcca::decode_byte_offset_bin_max(v.data, v.size, static_cast<std::size_t>(height),
                                             static_cast<std::size_t>(width), static_cast<std::size_t>(factor), b,
                                             er, ec, exp, threads);
    }
    return result_tuple(r);
}

}  // namespace

void register_cbf(py::module_& m) {
    m.def("md5", &md5_py, py::arg("data"), "Raw 16-byte MD5 digest of a bytes-like object (GIL released).");
    m.def("cbf_byte_offset", &decode_py, py::arg("data"), py::arg("offset"), py::arg("size"), py::arg("out"),
          py::arg("expected_md5") = py::none(), py::arg("n_threads") = py::none(),
          "Decode CBF byte-offset data data[offset:offset+size] into the integer array out (fabio's rules per "
          "dtype). With expected_md5 (raw 16 bytes) the MD5 of the data is checked, on a second thread unless "
          "n_threads=1. Returns (status, message, values, bytes_used, digest or None); status 0 = ok.");
    m.def("cbf_byte_offset_bin_max", &bin_max_py, py::arg("data"), py::arg("offset"), py::arg("size"),
          py::arg("height"), py::arg("width"), py::arg("factor"), py::arg("binned"), py::arg("empty_rows"),
          py::arg("empty_cols"), py::arg("expected_md5") = py::none(), py::arg("n_threads") = py::none(),
          "Decode an int32 byte-offset frame (height x width) straight into its factor x factor block maxima "
          "binned (int32, ceil(h/f) x ceil(w/f)) and the uint8 flags empty_rows (height) / empty_cols (width): 1 "
          "where no pixel is >= 0. The frame is never stored. Statuses, MD5 and result tuple as cbf_byte_offset.");
}

}  // namespace xcca_bind
