// CBF byte-offset decompression and MD5 (RFC 1321), for reading Pilatus/Eiger CBF frames at detector rate.
//
// The byte-offset scheme (CBF's "x-CBF_BYTE_OFFSET") stores each pixel as the difference to the previous one
// (the first to 0): one signed byte, or the escape byte 0x80 followed by a little-endian int16; if that int16 is
// -32768 (bytes 00 80) an int32 follows; if that int32 is INT32_MIN (bytes 00 00 00 80) an int64 follows.
// The decoder reproduces fabio's two decoders bit for bit, because xcca keeps fabio as the reference reader:
//  - int32 output (Pilatus): escapes up to 32 bits (fabio's dec_cbf32; a 32-bit escape is never taken as the
//    64-bit marker, which is how fabio writes a delta of exactly INT32_MIN), sums wrap modulo 2^32;
//  - every other element type: escapes up to 64 bits, sums in int64 (wrapping), each value converted to the
//    output type modulo 2^bits (fabio's dec_cbf followed by NumPy's cast).
// Unlike fabio it never reads past the end of the input: an escape cut off by the end of the data, fewer values
// than the image has pixels, or bytes left over after the last pixel are reported (fabio would read beyond its
// buffer, fail an assertion, or silently drop the rest).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace xcca {

/// An MD5 digest (16 bytes, in the order RFC 1321 prints them).
using Md5Digest = std::array<std::uint8_t, 16>;

/// Incremental MD5 (RFC 1321). Written from the RFC; used to check a CBF's Content-MD5, not for security.
class Md5 {
public:
    Md5() noexcept;
    /// Adds `n` bytes.
    void update(const void* data, std::size_t n) noexcept;
    /// The digest of everything added; the object must not be updated afterwards.
    Md5Digest finish() noexcept;

private:
    std::uint32_t state_[4];
    std::uint64_t length_ = 0;  // bytes added
    std::uint8_t buffer_[64];
    std::size_t buffered_ = 0;
};

/// MD5 of `n` bytes at `data`.
Md5Digest md5(const void* data, std::size_t n) noexcept;

/// Outcome of a byte-offset decode.
enum class CbfStatus {
    ok = 0,
    truncated_escape,   ///< the data end inside an escape sequence
    too_few_values,     ///< the data end before every pixel has a value
    trailing_bytes,     ///< bytes are left after the last pixel (the header's sizes do not match the data)
    md5_mismatch,       ///< the data decode, but their MD5 differs from the expected one
};

/// Human-readable name of a status (for error messages).
const char* cbf_status_message(CbfStatus status) noexcept;

struct CbfDecodeResult {
    CbfStatus status = CbfStatus::ok;
    std::size_t values = 0;      ///< pixels written to `out`
    std::size_t bytes_used = 0;  ///< input bytes consumed
    bool md5_checked = false;    ///< an expected digest was given and compared
    Md5Digest digest{};          ///< MD5 of all `n_bytes` input bytes (when md5_checked)
};

/// Decodes byte-offset data `src[0, n_bytes)` into `n_values` pixels `out` (see the file comment for the rules
/// per type). T is one of int8/16/32/64 or uint8/16/32/64. If `expected_md5` is not null, the MD5 of the input is
/// computed too and compared: with `n_threads` != 1 (0 = all usable cores) on a second thread while this one
/// decodes (the MD5 is as slow as the decode, so this halves the time on two cores). Never reads outside
/// `src[0, n_bytes)`, never writes outside `out[0, n_values)`; on an error `out` holds the values decoded so far.
template <class T>
CbfDecodeResult decode_byte_offset(const std::uint8_t* src, std::size_t n_bytes, T* out, std::size_t n_values,
                                   const Md5Digest* expected_md5 = nullptr, int n_threads = 0);

/// Decodes an int32 byte-offset frame of `height` x `width` pixels (fabio's dec_cbf32 rules, as
/// decode_byte_offset<int32_t>) straight into its `factor` x `factor` block maxima, without storing the frame: the
/// rows are decoded one at a time into a small reused buffer and folded in.
///  - `binned`: ceil(height / factor) x ceil(width / factor) int32, row-major; block (i, j) is the max of rows
///    [i f, min(H, (i + 1) f)) x columns [j f, min(W, (j + 1) f)) (partial edge blocks kept; xcca.bin_max without
///    a mask);
///  - `empty_rows` (height), `empty_cols` (width): 1 where the row (column) has no pixel >= 0 (the default
///    validity rule of xcca's thumbnails, see xcca.reference.empty_lines), else 0.
/// Same statuses, byte accounting and MD5 handling as decode_byte_offset; `values` counts the decoded pixels. On
/// an error the outputs are unspecified. Throws std::invalid_argument if height, width or factor is 0.
CbfDecodeResult decode_byte_offset_bin_max(const std::uint8_t* src, std::size_t n_bytes, std::size_t height,
                                           std::size_t width, std::size_t factor, std::int32_t* binned,
                                           std::uint8_t* empty_rows, std::uint8_t* empty_cols,
                                           const Md5Digest* expected_md5 = nullptr, int n_threads = 0);

}  // namespace xcca
