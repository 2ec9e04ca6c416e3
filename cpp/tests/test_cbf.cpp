// CBF byte-offset decoder and MD5: RFC 1321 test vectors, incremental hashing, round trips through a reference
// encoder (every escape width, odd lengths, wrapping sums, all integer types), damaged inputs (cut escapes, too few
// values, leftover bytes, wrong MD5) and identical results with the MD5 on a second thread or on this one.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "check.hpp"
#include "xcca/cbf.hpp"

namespace {

std::string hex(const xcca::Md5Digest& d) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (auto b : d) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

void check_md5_vectors() {
    const char* cases[][2] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    for (auto& c : cases) CHECK(hex(xcca::md5(c[0], std::strlen(c[0]))) == c[1]);
    // Incremental updates in every chunk size give the one-shot digest (block and padding boundaries).
    std::vector<std::uint8_t> data(1000);
    std::mt19937 rng(3);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    for (std::size_t len : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000}) {
        const auto ref = xcca::md5(data.data(), len);
        for (std::size_t chunk : {1, 3, 63, 64, 65, 200}) {
            xcca::Md5 h;
            for (std::size_t p = 0; p < len; p += chunk) h.update(data.data() + p, std::min(chunk, len - p));
            CHECK(h.finish() == ref);
        }
    }
}

// Reference encoder: the smallest escape that holds each delta. int32 mode (Wide = false) computes deltas modulo
// 2^32 and never uses the 64-bit escape (as fabio and Pilatus write int32 frames); wide mode uses int64 deltas.
template <bool Wide>
std::vector<std::uint8_t> encode(const std::vector<std::int64_t>& v) {
    std::vector<std::uint8_t> s;
    std::int64_t last = 0;
    auto put = [&](std::uint64_t x, int n) {
        for (int i = 0; i < n; ++i) s.push_back(static_cast<std::uint8_t>(x >> (8 * i)));
    };
    for (std::int64_t x : v) {
        std::int64_t d = Wide ? static_cast<std::int64_t>(static_cast<std::uint64_t>(x) - static_cast<std::uint64_t>(last))
                              : static_cast<std::int32_t>(static_cast<std::uint32_t>(x) - static_cast<std::uint32_t>(last));
        if (d >= -127 && d <= 127) {
            s.push_back(static_cast<std::uint8_t>(d));
        } else if (d >= -32767 && d <= 32767) {
            s.push_back(0x80);
            put(static_cast<std::uint64_t>(d), 2);
        } else if (!Wide || (d >= -2147483647LL && d <= 2147483647LL)) {
            s.push_back(0x80);
            put(0x8000, 2);
            put(static_cast<std::uint64_t>(d), 4);
        } else {
            s.push_back(0x80);
            put(0x8000, 2);
            put(0x80000000u, 4);
            put(static_cast<std::uint64_t>(d), 8);
        }
        last = x;
    }
    return s;
}

std::vector<std::int64_t> random_values(std::size_t n, std::int64_t lo, std::int64_t hi, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int64_t> small(-3, 40), big(lo, hi);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<std::int64_t> v(n);
    for (auto& x : v) {
        const double r = u(rng);
        x = r < 0.8 ? small(rng) : r < 0.85 ? -1 : big(rng);
    }
    return v;
}

template <class T>
void check_round_trip(std::int64_t lo, std::int64_t hi) {
    constexpr bool wide = !std::is_same_v<T, std::int32_t>;
    for (std::size_t n : {0, 1, 2, 7, 8, 9, 15, 16, 17, 1000, 100003}) {
        auto v = random_values(n, lo, hi, static_cast<unsigned>(n + sizeof(T)));
        for (auto& x : v) x = static_cast<std::int64_t>(static_cast<T>(x));  // representable values
        const auto s = encode<wide>(v);
        const auto digest = xcca::md5(s.data(), s.size());
        for (int threads : {1, 2}) {
            std::vector<T> out(n + 1, T(99));
            const auto r = xcca::decode_byte_offset<T>(s.data(), s.size(), out.data(), n, &digest, threads);
            CHECK(r.status == xcca::CbfStatus::ok);
            CHECK(r.values == n && r.bytes_used == s.size() && r.md5_checked && r.digest == digest);
            bool same = true;
            for (std::size_t i = 0; i < n; ++i) same = same && out[i] == static_cast<T>(v[i]);
            CHECK(same);
            CHECK(out[n] == T(99));  // nothing written past the image
        }
    }
}

void check_escapes_and_wrapping() {
    // Every escape width, both signs, at the edges of each width.
    const std::vector<std::int64_t> edges = {0, 127, 0, -127, 0, 128, 0, -128, 32767, 0, -32767, 0, 32768, 0,
                                             -32768, 0, 2147483647, 0, -2147483647, 0, -2147483647LL - 1, 5};
    auto s = encode<false>(edges);
    std::vector<std::int32_t> o32(edges.size());
    CHECK(xcca::decode_byte_offset<std::int32_t>(s.data(), s.size(), o32.data(), o32.size()).status ==
          xcca::CbfStatus::ok);
    bool same = true;
    for (std::size_t i = 0; i < edges.size(); ++i) same = same && o32[i] == edges[i];
    CHECK(same);
    // int32: a 32-bit escape holding INT32_MIN is a delta (fabio's dec_cbf32), never the 64-bit marker.
    const std::uint8_t min32[] = {0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x01};
    std::int32_t two[2];
    CHECK(xcca::decode_byte_offset<std::int32_t>(min32, 8, two, 2).status == xcca::CbfStatus::ok);
    CHECK(two[0] == std::numeric_limits<std::int32_t>::min() && two[1] == std::numeric_limits<std::int32_t>::min() + 1);
    // Wide types: the same bytes start a 64-bit escape.
    const std::vector<std::int64_t> big = {0, (std::int64_t(1) << 40), -(std::int64_t(1) << 40), 3,
                                           std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()};
    s = encode<true>(big);
    std::vector<std::int64_t> o64(big.size());
    CHECK(xcca::decode_byte_offset<std::int64_t>(s.data(), s.size(), o64.data(), o64.size()).status ==
          xcca::CbfStatus::ok);
    CHECK(o64 == big);
    // uint16 gets the int64 sums modulo 2^16 (fabio's int64 decode followed by NumPy's cast).
    const std::uint8_t wrap[] = {0x80, 0xff, 0x7f, 0x80, 0xff, 0x7f, 0x80, 0xff, 0x7f};
    std::uint16_t u[3];
    CHECK(xcca::decode_byte_offset<std::uint16_t>(wrap, 9, u, 3).status == xcca::CbfStatus::ok);
    CHECK(u[0] == 32767 && u[1] == 65534 && u[2] == static_cast<std::uint16_t>(3 * 32767));
}

void check_damaged() {
    const std::vector<std::int64_t> v = {1, 2, 300, 4, 100000, 6, 7, 8, 9, 10, 11};
    const auto s = encode<false>(v);
    std::vector<std::int32_t> out(v.size() + 4);
    // Too short: cut inside each escape and between values.
    for (std::size_t cut = 0; cut < s.size(); ++cut) {
        const auto r = xcca::decode_byte_offset<std::int32_t>(s.data(), cut, out.data(), v.size());
        CHECK(r.status == xcca::CbfStatus::truncated_escape || r.status == xcca::CbfStatus::too_few_values);
        CHECK(r.bytes_used <= cut && r.values < v.size());
    }
    // Leftover bytes: the header promises fewer pixels than the data hold.
    auto r = xcca::decode_byte_offset<std::int32_t>(s.data(), s.size(), out.data(), v.size() - 1);
    CHECK(r.status == xcca::CbfStatus::trailing_bytes && r.values == v.size() - 1);
    // More pixels than data.
    r = xcca::decode_byte_offset<std::int32_t>(s.data(), s.size(), out.data(), v.size() + 4);
    CHECK(r.status == xcca::CbfStatus::too_few_values && r.values == v.size());
    // A lone escape byte at the very end (fabio would read past its buffer).
    const std::uint8_t lone[] = {0x05, 0x80};
    r = xcca::decode_byte_offset<std::int32_t>(lone, 2, out.data(), 2);
    CHECK(r.status == xcca::CbfStatus::truncated_escape && r.values == 1 && out[0] == 5);
    const std::uint8_t cut64[] = {0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x01};
    std::int64_t o64[2];
    CHECK(xcca::decode_byte_offset<std::int64_t>(cut64, 8, o64, 2).status == xcca::CbfStatus::truncated_escape);
    // One flipped bit: the MD5 catches it, whichever thread hashes.
    auto bad = s;
    bad[3] ^= 0x10;
    const auto digest = xcca::md5(s.data(), s.size());
    for (int threads : {1, 2}) {
        r = xcca::decode_byte_offset<std::int32_t>(bad.data(), bad.size(), out.data(), v.size(), &digest, threads);
        CHECK(r.status == xcca::CbfStatus::md5_mismatch && r.md5_checked && r.digest != digest);
    }
    CHECK(std::string(xcca::cbf_status_message(xcca::CbfStatus::md5_mismatch)).find("MD5") != std::string::npos);
}

// decode_byte_offset_bin_max against decode_byte_offset followed by a plain block max and row/column scans: odd
// sizes, partial edge blocks, factors larger than the image, all-invalid rows and columns, errors and the MD5.
void check_bin_max() {
    std::mt19937 rng(17);
    for (int trial = 0; trial < 400; ++trial) {
        const std::size_t H = 1 + rng() % 40, W = 1 + rng() % 40, f = 1 + rng() % 20;  // > 16: the generic block loop
        auto v = random_values(H * W, -(std::int64_t(1) << 31), (std::int64_t(1) << 31) - 1, 100 + trial);
        for (auto& x : v) x = static_cast<std::int32_t>(x);
        if (trial % 3 == 0) for (std::size_t x = 0; x < W; ++x) v[(trial % H) * W + x] = -1;   // a gap row
        if (trial % 4 == 0) for (std::size_t y = 0; y < H; ++y) v[y * W + trial % W] = -2;     // a gap column
        if (trial % 17 == 0) for (auto& x : v) x = -1;                                           // all invalid
        const auto s = encode<false>(v);
        const auto digest = xcca::md5(s.data(), s.size());
        const std::size_t bh = (H + f - 1) / f, bw = (W + f - 1) / f;
        std::vector<std::int32_t> ref(bh * bw, std::numeric_limits<std::int32_t>::min());
        std::vector<std::uint8_t> rr(H, 1), rc(W, 1);
        for (std::size_t y = 0; y < H; ++y)
            for (std::size_t x = 0; x < W; ++x) {
                const auto p = static_cast<std::int32_t>(v[y * W + x]);
                auto& b = ref[(y / f) * bw + x / f];
                b = std::max(b, p);
                if (p >= 0) rr[y] = rc[x] = 0;
            }
        for (int threads : {1, 2}) {
            std::vector<std::int32_t> out(bh * bw + 1, 99);
            std::vector<std::uint8_t> er(H + 1, 7), ec(W + 1, 7);
            const auto r = xcca::decode_byte_offset_bin_max(s.data(), s.size(), H, W, f, out.data(), er.data(),
                                                            ec.data(), trial % 2 ? &digest : nullptr, threads);
            CHECK(r.status == xcca::CbfStatus::ok && r.values == H * W && r.bytes_used == s.size());
            CHECK(r.md5_checked == (trial % 2 == 1));
            CHECK(std::equal(ref.begin(), ref.end(), out.begin()) && out[bh * bw] == 99);
            CHECK(std::equal(rr.begin(), rr.end(), er.begin()) && er[H] == 7);
            CHECK(std::equal(rc.begin(), rc.end(), ec.begin()) && ec[W] == 7);
        }
        // Damaged: the same statuses and counts as the plain decoder.
        std::vector<std::int32_t> full(H * W + 4), out(bh * bw);
        std::vector<std::uint8_t> er(H), ec(W);
        const std::size_t cut = rng() % (s.size() + 1);
        // H x W and a (H W + 1) x 1 frame (too few values unless the cut leaves bytes over).
        for (const auto& [hh, ww] : {std::pair<std::size_t, std::size_t>{H, W}, {H * W + 1, 1}}) {
            const auto a = xcca::decode_byte_offset<std::int32_t>(s.data(), cut, full.data(), hh * ww);
            std::vector<std::int32_t> o2((hh + f - 1) / f * ((ww + f - 1) / f));
            std::vector<std::uint8_t> e1(hh), e2(ww);
            const auto b = xcca::decode_byte_offset_bin_max(s.data(), cut, hh, ww, f, o2.data(), e1.data(), e2.data());
            CHECK(a.status == b.status && a.values == b.values && a.bytes_used == b.bytes_used);
        }
        auto bad = s;
        bad[rng() % bad.size()] ^= 0x04;
        const auto m = xcca::decode_byte_offset_bin_max(bad.data(), bad.size(), H, W, f, out.data(), er.data(),
                                                        ec.data(), &digest, 1 + trial % 2);
        CHECK(m.status == xcca::CbfStatus::md5_mismatch && m.md5_checked);
    }
    bool threw = false;
    try {
        std::int32_t o;
        std::uint8_t e;
        xcca::decode_byte_offset_bin_max(nullptr, 0, 1, 1, 0, &o, &e, &e);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
}

}  // namespace

int main() {
    check_md5_vectors();
    check_round_trip<std::int32_t>(-2147483647LL - 1, 2147483647LL);
    check_round_trip<std::int32_t>(-200, 70000);
    check_round_trip<std::uint32_t>(0, 4294967295LL);
    check_round_trip<std::int16_t>(-32768, 32767);
    check_round_trip<std::uint16_t>(0, 65535);
    check_round_trip<std::int8_t>(-128, 127);
    check_round_trip<std::uint8_t>(0, 255);
    check_round_trip<std::int64_t>(std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max());
    check_round_trip<std::uint64_t>(std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max());
    check_escapes_and_wrapping();
    check_damaged();
    check_bin_max();
    TEST_MAIN_RETURN();
}
