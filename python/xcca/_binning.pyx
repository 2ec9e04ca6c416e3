# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Binning and dilation kernels (Cython). Use xcca.bin_max, xcca.bin_sum and xcca.dilate_max.

Every kernel here works on one C-contiguous, native-endian 2-D image and on a band of output rows
[r0, r1), so that the Python layer can run bands in parallel threads (the loops release the GIL).
Masks are uint8 views of bool arrays: 1 = valid pixel (LOKI's convention). NaN pixels count as masked.
A masked pixel is replaced by the dtype's lowest value ("lo": -inf, INT32_MIN or 0), the identity of max,
so it never wins a max; blocks/windows without any valid pixel therefore come out as lo.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from libc.math cimport INFINITY, rint

ctypedef fused pix_t:
    uint8_t
    uint16_t
    int16_t
    int32_t
    uint32_t
    int64_t
    float
    double

ctypedef fused acc_t:
    int64_t
    double


cdef inline pix_t _lowest(pix_t dummy) noexcept nogil:
    # The identity of max for each dtype.
    if pix_t is float or pix_t is double:
        return <pix_t>(-INFINITY)
    elif pix_t is int16_t:
        return <pix_t>(-32768)
    elif pix_t is int32_t:
        return <pix_t>(-2147483647 - 1)
    elif pix_t is int64_t:
        return <pix_t>(-9223372036854775807 - 1)
    else:
        return 0


cdef inline pix_t _max(pix_t m, pix_t v) noexcept nogil:
    # NaN in v never wins (the comparison is false); this form compiles to maxps/pmax-like code.
    return v if v > m else m


cdef extern from "_dilate_simd.h" nogil:
    # Elementwise max kernels, cloned for AVX2 and the baseline at build time (see the header for why in C).
    void xcca_vmax2_u8(uint8_t* d, const uint8_t* a, const uint8_t* b, Py_ssize_t n)
    void xcca_vmax2_u16(uint16_t* d, const uint16_t* a, const uint16_t* b, Py_ssize_t n)
    void xcca_vmax2_i16(int16_t* d, const int16_t* a, const int16_t* b, Py_ssize_t n)
    void xcca_vmax2_i32(int32_t* d, const int32_t* a, const int32_t* b, Py_ssize_t n)
    void xcca_vmax2_u32(uint32_t* d, const uint32_t* a, const uint32_t* b, Py_ssize_t n)
    void xcca_vmax2_i64(int64_t* d, const int64_t* a, const int64_t* b, Py_ssize_t n)
    void xcca_vmax2_f32(float* d, const float* a, const float* b, Py_ssize_t n)
    void xcca_vmax2_f64(double* d, const double* a, const double* b, Py_ssize_t n)
    void xcca_vrun_u8(uint8_t* G, const uint8_t* r, const uint8_t* hb, uint8_t* o, Py_ssize_t n)
    void xcca_vrun_u16(uint16_t* G, const uint16_t* r, const uint16_t* hb, uint16_t* o, Py_ssize_t n)
    void xcca_vrun_i16(int16_t* G, const int16_t* r, const int16_t* hb, int16_t* o, Py_ssize_t n)
    void xcca_vrun_i32(int32_t* G, const int32_t* r, const int32_t* hb, int32_t* o, Py_ssize_t n)
    void xcca_vrun_u32(uint32_t* G, const uint32_t* r, const uint32_t* hb, uint32_t* o, Py_ssize_t n)
    void xcca_vrun_i64(int64_t* G, const int64_t* r, const int64_t* hb, int64_t* o, Py_ssize_t n)
    void xcca_vrun_f32(float* G, const float* r, const float* hb, float* o, Py_ssize_t n)
    void xcca_vrun_f64(double* G, const double* r, const double* hb, double* o, Py_ssize_t n)
    void xcca_vmax4lo_f32(float* d, const float* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n, float lo)
    void xcca_vmax4lo_f64(double* d, const double* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n, double lo)
    void xcca_vrun4_u8(uint8_t* G, const uint8_t* r0, const uint8_t* r1, const uint8_t* r2, const uint8_t* r3, const uint8_t* h0,
                         const uint8_t* h1, const uint8_t* h2, const uint8_t* h3, uint8_t* o0, uint8_t* o1, uint8_t* o2, uint8_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_u16(uint16_t* G, const uint16_t* r0, const uint16_t* r1, const uint16_t* r2, const uint16_t* r3, const uint16_t* h0,
                         const uint16_t* h1, const uint16_t* h2, const uint16_t* h3, uint16_t* o0, uint16_t* o1, uint16_t* o2, uint16_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_i16(int16_t* G, const int16_t* r0, const int16_t* r1, const int16_t* r2, const int16_t* r3, const int16_t* h0,
                         const int16_t* h1, const int16_t* h2, const int16_t* h3, int16_t* o0, int16_t* o1, int16_t* o2, int16_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_i32(int32_t* G, const int32_t* r0, const int32_t* r1, const int32_t* r2, const int32_t* r3, const int32_t* h0,
                         const int32_t* h1, const int32_t* h2, const int32_t* h3, int32_t* o0, int32_t* o1, int32_t* o2, int32_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_u32(uint32_t* G, const uint32_t* r0, const uint32_t* r1, const uint32_t* r2, const uint32_t* r3, const uint32_t* h0,
                         const uint32_t* h1, const uint32_t* h2, const uint32_t* h3, uint32_t* o0, uint32_t* o1, uint32_t* o2, uint32_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_i64(int64_t* G, const int64_t* r0, const int64_t* r1, const int64_t* r2, const int64_t* r3, const int64_t* h0,
                         const int64_t* h1, const int64_t* h2, const int64_t* h3, int64_t* o0, int64_t* o1, int64_t* o2, int64_t* o3,
                         Py_ssize_t n)
    void xcca_vrun4_f32(float* G, const float* r0, const float* r1, const float* r2, const float* r3, const float* h0,
                         const float* h1, const float* h2, const float* h3, float* o0, float* o1, float* o2, float* o3,
                         Py_ssize_t n)
    void xcca_vrun4_f64(double* G, const double* r0, const double* r1, const double* r2, const double* r3, const double* h0,
                         const double* h1, const double* h2, const double* h3, double* o0, double* o1, double* o2, double* o3,
                         Py_ssize_t n)
    void xcca_stream_copy(void* dst, const void* src, size_t n)
    void xcca_stream_fence()

    void xcca_binmax_band_u8(const uint8_t* img, Py_ssize_t H, Py_ssize_t W, uint8_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, uint8_t* t0, uint8_t* t1, uint8_t lo)
    void xcca_binmax_band_u16(const uint16_t* img, Py_ssize_t H, Py_ssize_t W, uint16_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, uint16_t* t0, uint16_t* t1, uint16_t lo)
    void xcca_binmax_band_i16(const int16_t* img, Py_ssize_t H, Py_ssize_t W, int16_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, int16_t* t0, int16_t* t1, int16_t lo)
    void xcca_binmax_band_i32(const int32_t* img, Py_ssize_t H, Py_ssize_t W, int32_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, int32_t* t0, int32_t* t1, int32_t lo)
    void xcca_binmax_band_u32(const uint32_t* img, Py_ssize_t H, Py_ssize_t W, uint32_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, uint32_t* t0, uint32_t* t1, uint32_t lo)
    void xcca_binmax_band_i64(const int64_t* img, Py_ssize_t H, Py_ssize_t W, int64_t* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, int64_t* t0, int64_t* t1, int64_t lo)
    void xcca_binmax_band_f32(const float* img, Py_ssize_t H, Py_ssize_t W, float* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, float* t0, float* t1, float lo)
    void xcca_binmax_band_f64(const double* img, Py_ssize_t H, Py_ssize_t W, double* out, Py_ssize_t Wo, Py_ssize_t fy,
                             Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, double* t0, double* t1, double lo)

    void xcca_vmax4_u8(uint8_t* d, const uint8_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_u16(uint16_t* d, const uint16_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_i16(int16_t* d, const int16_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_i32(int32_t* d, const int32_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_u32(uint32_t* d, const uint32_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_i64(int64_t* d, const int64_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_f32(float* d, const float* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)
    void xcca_vmax4_f64(double* d, const double* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n)

cdef inline void _vmax2(pix_t* d, const pix_t* a, const pix_t* b, Py_ssize_t n) noexcept nogil:
    # d[x] = max(a[x], b[x]), d not overlapping a or b; inputs NaN-free.
    if pix_t is uint8_t:
        xcca_vmax2_u8(d, a, b, n)
    elif pix_t is uint16_t:
        xcca_vmax2_u16(d, a, b, n)
    elif pix_t is int16_t:
        xcca_vmax2_i16(d, a, b, n)
    elif pix_t is int32_t:
        xcca_vmax2_i32(d, a, b, n)
    elif pix_t is uint32_t:
        xcca_vmax2_u32(d, a, b, n)
    elif pix_t is int64_t:
        xcca_vmax2_i64(d, a, b, n)
    elif pix_t is float:
        xcca_vmax2_f32(d, a, b, n)
    else:
        xcca_vmax2_f64(d, a, b, n)


cdef inline void _vmax4(pix_t* d, const pix_t* a, Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t n) noexcept nogil:
    # d[x] = max(a[x], a[x + s1], a[x + s2], a[x + s1 + s2]), d not overlapping a; inputs NaN-free.
    if pix_t is uint8_t:
        xcca_vmax4_u8(d, a, s1, s2, n)
    elif pix_t is uint16_t:
        xcca_vmax4_u16(d, a, s1, s2, n)
    elif pix_t is int16_t:
        xcca_vmax4_i16(d, a, s1, s2, n)
    elif pix_t is int32_t:
        xcca_vmax4_i32(d, a, s1, s2, n)
    elif pix_t is uint32_t:
        xcca_vmax4_u32(d, a, s1, s2, n)
    elif pix_t is int64_t:
        xcca_vmax4_i64(d, a, s1, s2, n)
    elif pix_t is float:
        xcca_vmax4_f32(d, a, s1, s2, n)
    else:
        xcca_vmax4_f64(d, a, s1, s2, n)


cdef inline void _vrun4(pix_t* G, const pix_t** r, const pix_t** hb, pix_t** o, Py_ssize_t n) noexcept nogil:
    # Four _vrun steps in one pass: rows r[0..3], suffix rows hb[0..3], outputs o[0..3].
    if pix_t is uint8_t:
        xcca_vrun4_u8(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is uint16_t:
        xcca_vrun4_u16(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is int16_t:
        xcca_vrun4_i16(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is int32_t:
        xcca_vrun4_i32(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is uint32_t:
        xcca_vrun4_u32(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is int64_t:
        xcca_vrun4_i64(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    elif pix_t is float:
        xcca_vrun4_f32(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)
    else:
        xcca_vrun4_f64(G, r[0], r[1], r[2], r[3], hb[0], hb[1], hb[2], hb[3], o[0], o[1], o[2], o[3], n)


cdef inline void _vrun(pix_t* G, const pix_t* r, const pix_t* hb, pix_t* o, Py_ssize_t n) noexcept nogil:
    # G = max(G, r); o = max(hb, G); no overlaps.
    if pix_t is uint8_t:
        xcca_vrun_u8(G, r, hb, o, n)
    elif pix_t is uint16_t:
        xcca_vrun_u16(G, r, hb, o, n)
    elif pix_t is int16_t:
        xcca_vrun_i16(G, r, hb, o, n)
    elif pix_t is int32_t:
        xcca_vrun_i32(G, r, hb, o, n)
    elif pix_t is uint32_t:
        xcca_vrun_u32(G, r, hb, o, n)
    elif pix_t is int64_t:
        xcca_vrun_i64(G, r, hb, o, n)
    elif pix_t is float:
        xcca_vrun_f32(G, r, hb, o, n)
    else:
        xcca_vrun_f64(G, r, hb, o, n)


cdef void *_alloc(size_t nbytes) noexcept nogil:
    return malloc(nbytes if nbytes > 0 else 1)


def _check_band(Py_ssize_t n_out_rows, Py_ssize_t r0, Py_ssize_t r1):
    if not (0 <= r0 <= r1 <= n_out_rows):
        raise ValueError(f"row band [{r0}, {r1}) outside [0, {n_out_rows})")


cdef _check_bin_args(str name, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t fy,
                     Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1, bint has_mask, Py_ssize_t mH, Py_ssize_t mW,
                     bint has_valid, Py_ssize_t vH, Py_ssize_t vW):
    """Shape checks shared by the block kernels (the public API has validated already; this guards the C loops)."""
    if fy <= 0 or fx <= 0 or Ho != (H + fy - 1) // fy or Wo != (W + fx - 1) // fx or H == 0 or W == 0:
        raise ValueError(f"{name}: inconsistent shapes")
    _check_band(Ho, r0, r1)
    if has_mask and (mH != H or mW != W or not has_valid or vH != Ho or vW != Wo):
        raise ValueError(f"{name}: inconsistent mask/valid shapes")


# ---------------------------------------------------------------------------------------------------- bin_max

cdef void _bin_max_band(const pix_t* img, Py_ssize_t H, Py_ssize_t W, const uint8_t* mask,
                        pix_t* out, uint8_t* valid, Py_ssize_t Wo, Py_ssize_t fy, Py_ssize_t fx,
                        Py_ssize_t r0, Py_ssize_t r1, pix_t* tmp, uint8_t* tmpv) noexcept nogil:
    cdef pix_t lo = _lowest(img[0])
    cdef Py_ssize_t r, y, y1, x, x1, j
    cdef const pix_t* row
    cdef const uint8_t* mrow
    cdef pix_t v, m
    cdef uint8_t a
    if mask == NULL:
        # The AVX2-cloned C kernel (same folds, same bits; tmp holds 2 * W here).
        if pix_t is uint8_t:
            xcca_binmax_band_u8(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is uint16_t:
            xcca_binmax_band_u16(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is int16_t:
            xcca_binmax_band_i16(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is int32_t:
            xcca_binmax_band_i32(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is uint32_t:
            xcca_binmax_band_u32(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is int64_t:
            xcca_binmax_band_i64(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        elif pix_t is float:
            xcca_binmax_band_f32(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        else:
            xcca_binmax_band_f64(img, H, W, out, Wo, fy, fx, r0, r1, tmp, tmp + W, lo)
        return
    for r in range(r0, r1):
        # Vertical pass first: elementwise max of fy contiguous rows (vectorises, streams memory once).
        for x in range(W):
            tmp[x] = lo
        y1 = min((r + 1) * fy, H)
        if mask == NULL:
            for y in range(r * fy, y1):
                row = img + y * W
                for x in range(W):
                    tmp[x] = _max(tmp[x], row[x])
        else:
            memset(tmpv, 0, W)
            for y in range(r * fy, y1):
                row = img + y * W
                mrow = mask + y * W
                for x in range(W):
                    v = row[x] if mrow[x] else lo
                    tmp[x] = _max(tmp[x], v)
                    tmpv[x] |= mrow[x] & (v == v)
        # Horizontal pass over the (cached) row of column maxima; the last block may be partial.
        for j in range(Wo):
            x1 = min((j + 1) * fx, W)
            m = tmp[j * fx]
            for x in range(j * fx + 1, x1):
                m = _max(m, tmp[x])
            out[r * Wo + j] = m
        if mask != NULL:
            for j in range(Wo):
                x1 = min((j + 1) * fx, W)
                a = 0
                for x in range(j * fx, x1):
                    a |= tmpv[x]
                valid[r * Wo + j] = a


def bin_max_rows(const pix_t[:, ::1] img, const uint8_t[:, ::1] mask, pix_t[:, ::1] out,
                 uint8_t[:, ::1] valid, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1):
    """Block max of `img` into rows [r0, r1) of `out`; `valid` (with `mask`) flags blocks with a valid pixel."""
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1], Ho = out.shape[0], Wo = out.shape[1]
    _check_bin_args("bin_max_rows", H, W, Ho, Wo, fy, fx, r0, r1,
                    mask is not None, mask.shape[0] if mask is not None else 0,
                    mask.shape[1] if mask is not None else 0, valid is not None,
                    valid.shape[0] if valid is not None else 0, valid.shape[1] if valid is not None else 0)
    cdef const uint8_t* mp = NULL
    cdef uint8_t* vp = NULL
    if mask is not None:
        mp = &mask[0, 0]
        vp = &valid[0, 0]
    cdef pix_t* tmp
    cdef uint8_t* tmpv
    with nogil:
        tmp = <pix_t*>_alloc(2 * W * sizeof(pix_t))
        tmpv = <uint8_t*>_alloc(W)
        if tmp != NULL and tmpv != NULL:
            _bin_max_band(&img[0, 0], H, W, mp, &out[0, 0], vp, Wo, fy, fx, r0, r1, tmp, tmpv)
    if tmp == NULL or tmpv == NULL:
        free(tmp); free(tmpv)
        raise MemoryError()
    free(tmp); free(tmpv)


# ---------------------------------------------------------------------------------------------------- bin_sum

cdef void _bin_sum_band(const pix_t* img, Py_ssize_t H, Py_ssize_t W, const uint8_t* mask,
                        acc_t* out, uint8_t* valid, Py_ssize_t Wo, Py_ssize_t fy, Py_ssize_t fx,
                        Py_ssize_t r0, Py_ssize_t r1, acc_t* tmp, uint8_t* tmpv) noexcept nogil:
    cdef Py_ssize_t r, y, y1, x, x1, j
    cdef const pix_t* row
    cdef const uint8_t* mrow
    cdef pix_t v
    cdef acc_t s
    cdef uint8_t a
    for r in range(r0, r1):
        # Sequential order (rows, then columns) is part of the contract: reference.bin_sum sums the same way,
        # so float results agree bit for bit.
        for x in range(W):
            tmp[x] = 0
        y1 = min((r + 1) * fy, H)
        if mask == NULL:
            for y in range(r * fy, y1):
                row = img + y * W
                if pix_t is float or pix_t is double:
                    for x in range(W):
                        v = row[x]
                        tmp[x] += <acc_t>(v if v == v else 0)
                else:
                    for x in range(W):
                        tmp[x] += <acc_t>row[x]
        else:
            memset(tmpv, 0, W)
            for y in range(r * fy, y1):
                row = img + y * W
                mrow = mask + y * W
                for x in range(W):
                    v = row[x]
                    a = mrow[x] & (v == v)
                    tmp[x] += <acc_t>(v if a else 0)
                    tmpv[x] |= a
        for j in range(Wo):
            x1 = min((j + 1) * fx, W)
            s = tmp[j * fx]
            for x in range(j * fx + 1, x1):
                s += tmp[x]
            out[r * Wo + j] = s
        if mask != NULL:
            for j in range(Wo):
                x1 = min((j + 1) * fx, W)
                a = 0
                for x in range(j * fx, x1):
                    a |= tmpv[x]
                valid[r * Wo + j] = a


def bin_sum_rows(const pix_t[:, ::1] img, const uint8_t[:, ::1] mask, acc_t[:, ::1] out,
                 uint8_t[:, ::1] valid, Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t r0, Py_ssize_t r1):
    """Block sums of `img` into rows [r0, r1) of `out` (int64 or float64)."""
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1], Ho = out.shape[0], Wo = out.shape[1]
    _check_bin_args("bin_sum_rows", H, W, Ho, Wo, fy, fx, r0, r1,
                    mask is not None, mask.shape[0] if mask is not None else 0,
                    mask.shape[1] if mask is not None else 0, valid is not None,
                    valid.shape[0] if valid is not None else 0, valid.shape[1] if valid is not None else 0)
    cdef const uint8_t* mp = NULL
    cdef uint8_t* vp = NULL
    if mask is not None:
        mp = &mask[0, 0]
        vp = &valid[0, 0]
    cdef acc_t* tmp
    cdef uint8_t* tmpv
    with nogil:
        tmp = <acc_t*>_alloc(W * sizeof(acc_t))
        tmpv = <uint8_t*>_alloc(W)
        if tmp != NULL and tmpv != NULL:
            _bin_sum_band(&img[0, 0], H, W, mp, &out[0, 0], vp, Wo, fy, fx, r0, r1, tmp, tmpv)
    if tmp == NULL or tmpv == NULL:
        free(tmp); free(tmpv)
        raise MemoryError()
    free(tmp); free(tmpv)


# ---------------------------------------------------------------------------------------------------- dilate_max
# van Herk / Gil-Werman: split the (padded) line into blocks of k; a window of length k starting at t spans at most
# two blocks, so max(window) = max(suffix max of t's block at t, prefix max of the next block at t + k - 1):
# three max operations per pixel and axis, whatever k. The window of output y is [y - (k-1)//2, y + k//2], which is
# scipy.ndimage.grey_dilation's placement (for even k it reaches one pixel further down/right than up/left);
# pixels outside the image are absent (lo), which equals scipy's default mode='reflect' for a max.
# The square is separable: rows first (_hline), then columns (_dilate_band). Rows up to a switch size use a
# "doubling" chain of contiguous elementwise maxima instead (log2(k) vectorised passes, faster than the scalar
# van Herk scans for every size up to the switch); the elementwise kernels live in _dilate_simd.h, cloned for AVX2.

# Horizontal window sizes up to this use the vectorised doubling scans (at most 10 passes here), larger ones the
# scalar van Herk scans (O(1) per pixel), so the work per pixel stays bounded whatever the size. Measured on the
# 2527 x 2463 int32 Pilatus frame, one thread, whole dilation (van Herk rows vs doubling rows): size 10: 10.1 vs
# 5.9 ms, 64: 12.1 vs 8.2, 256: 13.8 vs 9.5, 512: 15.1 vs 13.1, 1024: 20.5 vs 21.7.
cdef Py_ssize_t _DOUBLING_MAX_K = 512


# Outputs at least this big are written with non-temporal stores, a block of rows at a time: they cannot stay
# in cache anyway, and bypassing it saves reading each output line before writing it (Pilatus frame, size 10,
# one thread: 5.1 vs 5.5 ms int32, 5.7 vs 6.1 ms float32). Smaller outputs stay cached for the caller.
cdef Py_ssize_t _STREAM_MIN_BYTES = 8 << 20


def _stream_min_bytes(n=None):
    """Output size from which dilate_max streams its stores (get; set when `n` is given). For tests/benchmarks."""
    global _STREAM_MIN_BYTES
    if n is not None:
        _STREAM_MIN_BYTES = max(0, int(n))
    return _STREAM_MIN_BYTES


def _row_scan_switch(k=None):
    """Largest horizontal size using the doubling scans (get; set when `k` is given). For tests and benchmarks."""
    global _DOUBLING_MAX_K
    if k is not None:
        _DOUBLING_MAX_K = max(0, int(k))
    return _DOUBLING_MAX_K

cdef void _dilate_line(const pix_t* P, pix_t* h, pix_t* out, Py_ssize_t W, Py_ssize_t k) noexcept nogil:
    # P has length L = W + k - 1: the line with (k-1)//2 lo's before and k//2 after it. out[x] = max(P[x:x+k]).
    # The scans are chains of dependent max operations; four blocks advance together so that four independent
    # chains keep the CPU busy (about 2x faster than one block at a time).
    cdef Py_ssize_t nb = (W + k - 1) // k, nfull = W // k, q, bs, i, j, jn
    cdef pix_t m, m0, m1, m2, m3
    cdef const pix_t* p
    cdef pix_t* hh
    # Suffix maxima within blocks of k; every block starting inside [0, W) is complete within P.
    q = 0
    while q + 4 <= nb:
        p = P + q * k
        hh = h + q * k
        m0 = p[k - 1]; m1 = p[2 * k - 1]; m2 = p[3 * k - 1]; m3 = p[4 * k - 1]
        for i in range(k - 1, -1, -1):
            m0 = _max(m0, p[i]); hh[i] = m0
            m1 = _max(m1, p[k + i]); hh[k + i] = m1
            m2 = _max(m2, p[2 * k + i]); hh[2 * k + i] = m2
            m3 = _max(m3, p[3 * k + i]); hh[3 * k + i] = m3
        q += 4
    while q < nb:
        bs = q * k
        m = P[bs + k - 1]
        for i in range(bs + k - 1, bs - 1, -1):
            m = _max(m, P[i])
            h[i] = m
        q += 1
    # Window [x, x + k - 1] = max(suffix of x's block at x, running prefix of the next block up to x + k - 1).
    q = 0
    while q + 4 <= nfull:
        p = P + (q + 1) * k - 1   # p[j] = P[bs + k + j - 1] for the first block of the four
        hh = h + q * k
        for j in range(4):
            out[q * k + j * k] = hh[j * k]
        if k > 1:
            m0 = p[1]; m1 = p[k + 1]; m2 = p[2 * k + 1]; m3 = p[3 * k + 1]
            for j in range(1, k):
                m0 = _max(m0, p[j]); out[q * k + j] = _max(hh[j], m0)
                m1 = _max(m1, p[k + j]); out[q * k + k + j] = _max(hh[k + j], m1)
                m2 = _max(m2, p[2 * k + j]); out[q * k + 2 * k + j] = _max(hh[2 * k + j], m2)
                m3 = _max(m3, p[3 * k + j]); out[q * k + 3 * k + j] = _max(hh[3 * k + j], m3)
        q += 4
    while q < nb:
        bs = q * k
        out[bs] = h[bs]
        jn = min(k, W - bs)
        if jn > 1:
            m = P[bs + k]
            for j in range(1, jn):
                m = _max(m, P[bs + k + j - 1])
                out[bs + j] = _max(h[bs + j], m)
        q += 1


cdef Py_ssize_t _doubling_offsets(Py_ssize_t k, Py_ssize_t* offs) noexcept nogil:
    # With p the largest power of two <= k, the k-window max is a chain of steps m[x] = max(m[x], m[x + o]) with
    # o = 1, 2, 4, ..., p/2 (windows of 2, 4, ..., p) and a last o = k - p (two overlapping p-windows cover the
    # k-window). Returns the number of steps (<= 63).
    cdef Py_ssize_t nof = 0, p = 1
    while 2 * p <= k:
        offs[nof] = p
        nof += 1
        p *= 2
    if k > p:
        offs[nof] = k - p
        nof += 1
    return nof


cdef void _doubling_steps(pix_t* P, pix_t* h, pix_t* out, Py_ssize_t W, Py_ssize_t k, const Py_ssize_t* offs,
                          Py_ssize_t nof, Py_ssize_t start) noexcept nogil:
    # Same contract as _dilate_line, for small k, but P is used as scratch (its padding must be reset). Runs steps
    # offs[start:] of the doubling chain: from the padded line P when start == 0, else from h, which then holds
    # the result of the first `start` steps. Steps are fused in pairs (one pass computes
    # max(m[x], m[x+o1], m[x+o2], m[x+o1+o2])) and ping-pong between P and h. Every pass is a contiguous
    # elementwise max, so it vectorises; the cost grows as log2(k), hence only below a measured switch point.
    cdef Py_ssize_t i, n = W + k - 1
    cdef pix_t* cur = P if start == 0 else h
    cdef pix_t* dest
    for i in range(start):
        n -= offs[i]
    i = start
    if i == nof:
        memcpy(out, cur, W * sizeof(pix_t))
        return
    while i < nof:
        if i + 1 < nof:
            n -= offs[i] + offs[i + 1]
            dest = out if i + 2 == nof else (h if cur == P else P)
            _vmax4(dest, cur, offs[i], offs[i + 1], n)
            i += 2
        else:
            n -= offs[i]
            dest = out
            _vmax2(dest, cur, cur + offs[i], n)
            i += 1
        cur = dest


cdef inline pix_t _edge4(const pix_t* src, Py_ssize_t W, Py_ssize_t j0, const Py_ssize_t* sh,
                         pix_t lo) noexcept nogil:
    # max of src[j0 + sh[t]] over t < 4, ignoring indices outside [0, W)
    cdef pix_t v = lo
    cdef Py_ssize_t t, j
    for t in range(4):
        j = j0 + sh[t]
        if 0 <= j < W:
            v = _max(v, src[j])
    return v


cdef void _hline(const pix_t* src, const uint8_t* m, pix_t* P, pix_t* h, pix_t* dst, Py_ssize_t W, Py_ssize_t kh,
                 pix_t lo) noexcept nogil:
    # dst = horizontal dilation of one input row (masked and NaN pixels -> lo); src NULL = a row outside the image.
    cdef Py_ssize_t x, j, o1, o2, n, nof = 0
    cdef Py_ssize_t a = (kh - 1) // 2
    cdef Py_ssize_t offs[64]
    cdef Py_ssize_t sh[4]
    cdef pix_t* pa = P + a
    cdef pix_t* d
    if src == NULL:
        for x in range(W):
            dst[x] = lo
        return
    if kh <= _DOUBLING_MAX_K:
        nof = _doubling_offsets(kh, offs)
        if m == NULL and nof >= 2:
            # No mask: the first two doubling steps read the row straight from the image (one pass over the row
            # fewer). d[x] = max(P[x + sh]) over sh in {0, o1, o2, o1 + o2}, P = the padded row (P[x] = src[x - a]
            # inside, lo outside; NaN never wins): vectorised where all four are inside, scalar at the ends.
            o1 = offs[0]; o2 = offs[1]
            sh[0] = 0; sh[1] = o1; sh[2] = o2; sh[3] = o1 + o2
            n = W + kh - 1 - o1 - o2
            d = dst if nof == 2 else h
            j = max(W - o1 - o2, 0)   # interior length: x in [a, a + j)
            if j > 0:
                if pix_t is float:
                    xcca_vmax4lo_f32(d + a, src, o1, o2, j, lo)
                elif pix_t is double:
                    xcca_vmax4lo_f64(d + a, src, o1, o2, j, lo)
                else:
                    _vmax4(d + a, src, o1, o2, j)   # integers hold no NaN
            for x in range(a):
                d[x] = _edge4(src, W, x - a, sh, lo)
            for x in range(a + j, n):
                d[x] = _edge4(src, W, x - a, sh, lo)
            if nof > 2:
                _doubling_steps(P, h, dst, W, kh, offs, nof, 2)
            return
    for x in range(a):
        P[x] = lo  # the padding: the doubling scans use P as scratch
    for x in range(a + W, W + kh - 1):
        P[x] = lo
    if m == NULL:
        for x in range(W):
            pa[x] = _max(lo, src[x])
    else:
        for x in range(W):
            pa[x] = _max(lo, src[x] if m[x] else lo)
    if kh <= _DOUBLING_MAX_K:
        _doubling_steps(P, h, dst, W, kh, offs, nof, 0)
    else:
        _dilate_line(P, h, dst, W, kh)


cdef void _dilate_band(const pix_t* img, Py_ssize_t H, Py_ssize_t W, const uint8_t* mask, pix_t* out,
                       Py_ssize_t kv, Py_ssize_t kh, Py_ssize_t Y0, Py_ssize_t Y1, Py_ssize_t S,
                       pix_t* ring, pix_t* P, pix_t* h, pix_t* hb, pix_t* G, pix_t* T,
                       bint stream) noexcept nogil:
    # Rows are dilated horizontally first (row-local, in cache) into a ring of 2*kv rows; the vertical van Herk
    # then runs on column strips of S pixels (its k x S suffix block).
    cdef pix_t lo = _lowest(img[0])
    cdef Py_ssize_t a = (kv - 1) // 2, n = Y1 - Y0, s0 = Y0 - a, nq = n + kv - 1, L = W + kh - 1, R2 = 2 * kv
    cdef Py_ssize_t B, i, x, x0, xs, y, need, nt, done = 0
    cdef const pix_t* r
    cdef const pix_t* q
    cdef const pix_t* last
    cdef pix_t* o
    cdef pix_t* d
    cdef pix_t* ob
    cdef const pix_t* r4[4]
    cdef const pix_t* h4[4]
    cdef pix_t* o4[4]
    cdef Py_ssize_t t
    for x in range(L):
        P[x] = lo  # the padding ends stay lo
    B = 0
    while B < n:
        need = min(B + 2 * kv - 1, nq)
        while done < need:
            y = s0 + done
            _hline(img + y * W if 0 <= y < H else NULL, mask + y * W if (mask != NULL and 0 <= y < H) else NULL,
                   P, h, ring + (done % R2) * W, W, kh, lo)
            done += 1
        nt = min(kv, n - B)
        # stream: the block's output rows go to T (cache) and then to `out` with non-temporal stores.
        ob = T if stream else out + (Y0 + B) * W
        x0 = 0
        while x0 < W:
            xs = min(S, W - x0)
            # Suffix maxima of the block's kv rows; output row B is its first.
            # hb row kv - 1 would be a copy of the block's last ring row: read the ring row instead; row 0 only
            # feeds output row B, so it is written there directly.
            last = ring + ((B + kv - 1) % R2) * W + x0   # = suffix row kv - 1
            q = last
            for i in range(kv - 2, -1, -1):
                r = ring + ((B + i) % R2) * W + x0
                d = hb + i * S if i > 0 else ob + x0
                _vmax2(d, q, r, xs)
                q = d
            if kv == 1:
                memcpy(ob + x0, q, xs * sizeof(pix_t))
            # Output row B + i: suffix at i, running prefix of the next block's first i rows.
            if nt > 1:
                r = ring + ((B + kv) % R2) * W + x0
                o = ob + W + x0
                memcpy(G, r, xs * sizeof(pix_t))
                _vmax2(o, hb + S if kv > 2 else last, r, xs)
                i = 2
                while i + 4 <= nt:
                    for t in range(4):
                        r4[t] = ring + ((B + kv + i + t - 1) % R2) * W + x0
                        h4[t] = hb + (i + t) * S if i + t < kv - 1 else last
                        o4[t] = ob + (i + t) * W + x0
                    _vrun4(G, r4, h4, o4, xs)
                    i += 4
                while i < nt:
                    r = ring + ((B + kv + i - 1) % R2) * W + x0
                    o = ob + i * W + x0
                    _vrun(G, r, hb + i * S if i < kv - 1 else last, o, xs)
                    i += 1
            x0 += S
        if stream:
            xcca_stream_copy(out + (Y0 + B) * W, T, nt * W * sizeof(pix_t))
        B += kv
    if stream:
        xcca_stream_fence()


def dilate_max_rows(const pix_t[:, ::1] img, const uint8_t[:, ::1] mask, pix_t[:, ::1] out,
                    Py_ssize_t k, Py_ssize_t r0, Py_ssize_t r1):
    """Grey dilation of `img` with a k x k square into rows [r0, r1) of `out` (masked pixels never win)."""
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1]
    if k <= 0 or out.shape[0] != H or out.shape[1] != W or H == 0 or W == 0:
        raise ValueError("dilate_max_rows: inconsistent shapes")
    _check_band(H, r0, r1)
    cdef const uint8_t* mp = NULL
    if mask is not None:
        if mask.shape[0] != H or mask.shape[1] != W:
            raise ValueError("dilate_max_rows: inconsistent mask shape")
        mp = &mask[0, 0]
    # A window of 2N or more pixels covers a whole line of N pixels wherever it sits: same result, less memory.
    cdef Py_ssize_t kv = min(k, 2 * H), kh = min(k, 2 * W)
    # Column strips of S pixels: whole rows measured fastest with the vectorised kernels (5.7 vs 6.0 ms for 16 kB
    # L1-sized strips on the Pilatus frame, size 10); the strip loop is kept so S can be tuned per machine.
    cdef Py_ssize_t S = W
    cdef size_t L = W + kh - 1
    cdef pix_t* buf
    with nogil:
        # ring 2*kv*W | P L | h L | hb kv*S | G S
        buf = <pix_t*>_alloc((2 * kv * W + 2 * L + kv * S + S + kv * W) * sizeof(pix_t))
        if buf != NULL:
            _dilate_band(&img[0, 0], H, W, mp, &out[0, 0], kv, kh, r0, r1, S,
                         buf, buf + 2 * kv * W, buf + 2 * kv * W + L, buf + 2 * kv * W + 2 * L,
                         buf + 2 * kv * W + 2 * L + kv * S, buf + 2 * kv * W + 2 * L + kv * S + S,
                         H * W * <Py_ssize_t>sizeof(pix_t) >= _STREAM_MIN_BYTES)
    if buf == NULL:
        raise MemoryError()
    free(buf)


# ---------------------------------------------------------------------------------------------------- empty lines

cdef inline bint _is_valid(const pix_t* img, const uint8_t* mask, Py_ssize_t i) noexcept nogil:
    # With a mask the mask alone decides (as the thumbnail's gap rule always did); else pixel >= 0 (False for NaN).
    if mask != NULL:
        return mask[i] != 0
    if pix_t is uint8_t or pix_t is uint16_t or pix_t is uint32_t:
        return True
    else:
        return img[i] >= 0


cdef inline Py_ssize_t _first_valid(const pix_t* img, const uint8_t* mask, Py_ssize_t base,
                                    Py_ssize_t W) noexcept nogil:
    # The first valid pixel of a row (W if none). Blocks of 64 pixels are tested with a branch-free OR that
    # vectorises, so that a gap row (no valid pixel: read whole) costs a fraction of a pixel-by-pixel scan.
    cdef Py_ssize_t x = 0, i
    cdef int acc
    while x + 64 <= W:
        acc = 0
        for i in range(64):
            acc |= _is_valid(img, mask, base + x + i)
        if acc:
            break
        x += 64
    while x < W and not _is_valid(img, mask, base + x):
        x += 1
    return x


cdef void _empty_lines(const pix_t* img, const uint8_t* mask, Py_ssize_t H, Py_ssize_t W, uint8_t* er,
                       uint8_t* ec, Py_ssize_t* cand) noexcept nogil:
    cdef Py_ssize_t y, y0, i, j, k, c, n = W, m
    cdef Py_ssize_t rows[16]
    cdef int acc
    for c in range(W):
        cand[c] = c
        ec[c] = 0
    for y0 in range(0, H, 16):
        # A row ends its scan at its first valid pixel: on a detector frame that is almost always the first one.
        m = 0
        for y in range(y0, min(y0 + 16, H)):
            er[y] = _first_valid(img, mask, y * W, W) == W
            if not er[y]:  # an empty row has no valid pixel for any column either
                rows[m] = y * W
                m += 1
        if m == 0 or n == 0:
            continue
        # Columns still without a valid pixel: after the first rows only the gap columns (and a few bad pixels)
        # remain. Each is tested on the block's (up to 16) non-empty rows at once: independent loads (rows are
        # pages apart, so they miss cache and TLB) that the CPU overlaps, not one dependent scan per row.
        k = 0
        for i in range(n):
            c = cand[i]
            acc = 0
            for j in range(m):
                acc |= _is_valid(img, mask, rows[j] + c)
            if not acc:
                cand[k] = c
                k += 1
        n = k
    for i in range(n):
        ec[cand[i]] = 1


def empty_lines(const pix_t[:, ::1] img, const uint8_t[:, ::1] mask, uint8_t[::1] empty_rows,
                uint8_t[::1] empty_cols):
    """Flag (1) the rows and the columns of `img` without any valid pixel.

    Valid means ``mask != 0`` when `mask` is given, else ``img >= 0`` (NaN invalid). One early-exit scan per row
    and, per row, a scan of the columns not yet seen valid: ~the gap lines' pixels instead of a full pass.
    """
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1]
    if H == 0 or W == 0 or empty_rows.shape[0] != H or empty_cols.shape[0] != W:
        raise ValueError("empty_lines: inconsistent shapes")
    cdef const uint8_t* mp = NULL
    if mask is not None:
        if mask.shape[0] != H or mask.shape[1] != W:
            raise ValueError("empty_lines: inconsistent mask shape")
        mp = &mask[0, 0]
    cdef Py_ssize_t* cand
    with nogil:
        cand = <Py_ssize_t*>_alloc(W * sizeof(Py_ssize_t))
        if cand != NULL:
            _empty_lines(&img[0, 0], mp, H, W, &empty_rows[0], &empty_cols[0], cand)
    if cand == NULL:
        raise MemoryError()
    free(cand)


# ---------------------------------------------------------------------------------------------------- resample max

def resample_max(const pix_t[:, ::1] src, const uint8_t[:, ::1] valid, const Py_ssize_t[::1] y0,
                 const Py_ssize_t[::1] y1, const Py_ssize_t[::1] x0, const Py_ssize_t[::1] x1, pix_t[:, ::1] out,
                 uint8_t[:, ::1] out_valid):
    """out[j, i] = max of the valid cells of src in rows [y0[j], y1[j]) x columns [x0[i], x1[i]).

    Valid: ``valid != 0`` and not NaN; a cell without one gets the dtype's lowest value and out_valid 0. The
    thumbnail's resize of a max-binned image to its exact size, in one pass (ranges may overlap or repeat).
    """
    cdef Py_ssize_t Hs = src.shape[0], Ws = src.shape[1], Ho = out.shape[0], Wo = out.shape[1]
    cdef Py_ssize_t j, i, y, x
    if (valid.shape[0] != Hs or valid.shape[1] != Ws or y0.shape[0] != Ho or y1.shape[0] != Ho
            or x0.shape[0] != Wo or x1.shape[0] != Wo or out_valid.shape[0] != Ho or out_valid.shape[1] != Wo):
        raise ValueError("resample_max: inconsistent shapes")
    for j in range(Ho):
        if not (0 <= y0[j] < y1[j] <= Hs):
            raise ValueError("resample_max: row range outside the source")
    for i in range(Wo):
        if not (0 <= x0[i] < x1[i] <= Ws):
            raise ValueError("resample_max: column range outside the source")
    if Ho == 0 or Wo == 0:
        return
    cdef pix_t lo = _lowest(src[0, 0])
    cdef pix_t v, m
    cdef uint8_t a, ok
    cdef pix_t* tmp
    cdef uint8_t* tv
    cdef const pix_t* srow
    cdef const uint8_t* vrow
    cdef pix_t* orow
    cdef uint8_t* ovrow
    with nogil:
        tmp = <pix_t*>_alloc(Ws * sizeof(pix_t))
        tv = <uint8_t*>_alloc(Ws)
        if tmp != NULL and tv != NULL:
            for j in range(Ho):
                # Rows first (contiguous, branch-free: vectorises), then the columns of the row of maxima, as in
                # bin_max.
                for x in range(Ws):
                    tmp[x] = lo
                    tv[x] = 0
                for y in range(y0[j], y1[j]):
                    srow = &src[y, 0]
                    vrow = &valid[y, 0]
                    for x in range(Ws):
                        v = srow[x]
                        ok = (vrow[x] != 0) & (v == v)
                        tmp[x] = _max(tmp[x], v if ok else lo)
                        tv[x] |= ok
                orow = &out[j, 0]
                ovrow = &out_valid[j, 0]
                for i in range(Wo):
                    x = x0[i]
                    m = tmp[x]
                    a = tv[x]
                    for x in range(x0[i] + 1, x1[i]):
                        m = _max(m, tmp[x])
                        a |= tv[x]
                    orow[i] = m
                    ovrow[i] = a
    if tmp == NULL or tv == NULL:
        free(tmp); free(tv)
        raise MemoryError()
    free(tmp); free(tv)


def lut_rgb(const double[:, ::1] t, const uint8_t[:, ::1] valid, const uint8_t[:, ::1] lut,
            const uint8_t[::1] color, uint8_t[:, :, ::1] out):
    """out[j, i] = lut[rint(255 t[j, i])] where valid[j, i] != 0, else color: the thumbnail's colouring in one pass.

    The same IEEE operations as ``np.rint(t * 255).astype(np.intp)`` and a LUT gather (spec:
    :func:`xcca.reference.lut_rgb`). Returns False, with `out` incomplete, when a valid value's index is NaN or
    outside the LUT (the caller then takes the NumPy path, which raises).
    """
    cdef Py_ssize_t H = t.shape[0], W = t.shape[1], n = lut.shape[0], j, i, k
    cdef double y
    cdef bint ok = True
    if (valid.shape[0] != H or valid.shape[1] != W or out.shape[0] != H or out.shape[1] != W or out.shape[2] != 3
            or lut.shape[1] != 3 or color.shape[0] != 3):
        raise ValueError("lut_rgb: inconsistent shapes")
    cdef uint8_t c0 = color[0], c1 = color[1], c2 = color[2]
    with nogil:
        for j in range(H):
            for i in range(W):
                if valid[j, i]:
                    y = rint(t[j, i] * 255.0)
                    if not (y >= 0 and y <= n - 1):  # NaN fails both
                        ok = False
                        break
                    k = <Py_ssize_t>y
                    out[j, i, 0] = lut[k, 0]
                    out[j, i, 1] = lut[k, 1]
                    out[j, i, 2] = lut[k, 2]
                else:
                    out[j, i, 0] = c0
                    out[j, i, 1] = c1
                    out[j, i, 2] = c2
            if not ok:
                break
    return ok
