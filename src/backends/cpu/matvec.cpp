// Matrix-vector products of the one-token decode step (kernels/infer_kernels.h):
// y = W x with F32, BF16 or Q8 weights, one matrix or several sharing x.
//
// A decode step reads every weight once, so these are bound by memory: on one
// core by how many cache misses it keeps in flight, on all by DRAM. Hence:
//   - kRows rows per pass: each load of x serves them all, and kRows streams
//     of W are in flight at once;
//   - one F32 FMA accumulator per row and lane, reduced once per row; a masked
//     load handles the in % 16 tail (AVX-512), so no scalar loop;
//   - every AVX-512 kernel prefetches ahead into L2 in software (see passes);
//   - the rows of all jobs split across threads in contiguous shares of equal
//     bytes (static; one parallel region per call, since a fork/join costs
//     microseconds), so each core streams one contiguous range.
// BF16 weights are widened in registers (exact) and multiplied with F32 x, so
// BF16 loses nothing beyond the weights' own rounding. On AVX-512 a 64-byte
// line of 32 weights is read as 16 dwords: (dword << 16) are its even
// weights and (dword & 0xffff0000) its odd ones, each multiplied with x's
// even or odd elements (de-interleaved once per call), so widening costs two
// in-lane ALU ops a line and no cross-lane zero-extension: on CPUs whose
// 512-bit shuffles are slow (AMD Zen 4 splits them in two) that extension
// made BF16 compute-bound (docs/performance.md, "Decode kernels"). AVX512-BF16's vdpbf16ps was measured against it
// (docs/performance.md, "Decode kernels"): with x rounded to BF16 it is 5-20%
// faster but its dot products are off by ~1e-3 relative; with x split into
// three BF16 parts (exact) it is no faster than widening. So: widening.
//
// Code paths, chosen once from the CPU (target attributes, not -march, so one
// binary runs anywhere): AVX-512 (F+BW+VL+DQ), AVX2+FMA, and portable C++ that
// the compiler may vectorise for baseline x86-64 or any other architecture.
// Q8 weights (int8 blocks with an F32 scale) meet x quantized the same way,
// and each block is an exact int32 dot product (AVX512-VNNI's vpdpbusd, or
// AVX2's vpmaddubsw + vpmaddwd, or scalar), added times the two scales into
// 8 F32 lanes: instructions per byte as few as F32's, and the same bits on
// every path (docs/precision.md).
// Not here: the prefill (several rows) path, which is a GEMM (linear_bf16.cpp,
// gemm.cpp), and attention (attention_cached.cpp).
#if defined(__x86_64__) && defined(__GNUC__)
#define STEM_MATVEC_X86 1
// GCC 12's AVX-512 intrinsics start from a self-initialised "undefined"
// vector, which its -Wmaybe-uninitialized (or, once inlined into a lambda,
// -Wuninitialized) flags in every caller (bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "backends/cpu/bf16_x.h"
#include "core/check.h"
#include "kernels/infer_kernels.h"

namespace stem::kernels {
namespace {

// Rows per pass on AVX-512 (x loads shared by the rows, kRows streams of W in
// flight); AVX2, with 16 registers, takes 8.
constexpr int kRows = 16;
// Below this much work a call stays on one thread, work = bytes of F32
// weights + half the bytes of BF16 ones. Measured (cold, 2 threads against 1):
// even at 256 KiB of F32 weights; BF16, whose second thread costs more to get
// going, only gains from 512 KiB (384 KiB: 17.3 us against 14.9).
constexpr int64_t kParallelWork = 256 * 1024;

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float widen(float w) { return w; }
inline float widen(uint16_t w) { return bf16_bits_to_float(w); }

inline void store(float* y, float s, bool accumulate) { *y = accumulate ? *y + s : s; }

// ---------------------------------------------------------------- portable
// Rows r0..r1 of W x; 8 partial sums a row so the compiler can vectorise
// without reassociating floats on its own.
template <class T>
void rows_portable(float* y, const T* W, const float* x, int64_t r0, int64_t r1, int64_t in,
                   bool accumulate) {
  constexpr int kLanes = 8;
  for (int64_t r = r0; r < r1; ++r) {
    const T* w = W + r * in;
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= in; i += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[l] += widen(w[i + l]) * x[i + l];
    float s = 0.0f;
    for (; i < in; ++i) s += widen(w[i]) * x[i];
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    store(y + r, s, accumulate);
  }
}

// Q8 rows (q8_row_bytes(in) bytes each) times xq, x quantized the same way:
// per block, the exact int32 dot products of its 8 groups of 4 weights, each
// group's times the two scales' product added into its own F32 lane, the 8
// lanes summed at the end in hsum8's pairs. The SIMD kernels compute the same
// lanes in the same order, so every path gives the same bits.
inline float sum_lanes8(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

void rows_q8_portable(float* y, const uint8_t* W, const uint8_t* xq, int64_t r0, int64_t r1, int64_t in,
                      bool accumulate) {
  const int64_t row = q8_row_bytes(in), nb = (in + 31) / 32;
  for (int64_t r = r0; r < r1; ++r) {
    float acc[8] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = W + r * row + b * 36;
      const uint8_t* xb = xq + b * 36;
      float sw, sx;
      std::memcpy(&sw, blk, 4);
      std::memcpy(&sx, xb, 4);
      const float scale = sw * sx;
      const auto* q = reinterpret_cast<const int8_t*>(blk + 4);
      const auto* p = reinterpret_cast<const int8_t*>(xb + 4);
      for (int l = 0; l < 8; ++l) {
        int32_t dot = 0;
        for (int i = 4 * l; i < 4 * l + 4; ++i) dot += int32_t{q[i]} * int32_t{p[i]};
        acc[l] = std::fma(static_cast<float>(dot), scale, acc[l]);
      }
    }
    store(y + r, sum_lanes8(acc), accumulate);
  }
}

#ifdef STEM_MATVEC_X86
// ---------------------------------------------------------------- AVX2 + FMA
#define STEM_AVX2 __attribute__((target("avx2,fma")))

STEM_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
STEM_AVX2 inline __m256 load8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
STEM_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R, class T>
STEM_AVX2 inline void block_avx2(float* y, const T* w, const float* x, int64_t in,
                                 bool accumulate) {
  __m256 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm256_setzero_ps();
  const int64_t nv = in / 8 * 8;
  for (int64_t i = 0; i < nv; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    for (int j = 0; j < R; ++j) acc[j] = _mm256_fmadd_ps(load8(w + j * in + i), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) {
    float s = hsum8(acc[j]);
    for (int64_t i = nv; i < in; ++i) s += widen(w[j * in + i]) * x[i];
    store(y + j, s, accumulate);
  }
}

template <class T>
STEM_AVX2 void rows_avx2(float* y, const T* W, const float* x, int64_t r0, int64_t r1, int64_t in,
                         bool accumulate) {
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8) block_avx2<8>(y + r, W + r * in, x, in, accumulate);
  if (r + 4 <= r1) {
    block_avx2<4>(y + r, W + r * in, x, in, accumulate);
    r += 4;
  }
  for (; r < r1; ++r) block_avx2<1>(y + r, W + r * in, x, in, accumulate);
}

// The int32 dot products of 32 int8 weights w and 32 int8 x, in 8 lanes of 4
// products each: |w| (unsigned) times x with w's sign, pairs summed to 16 bits
// (at most 2 x 127 x 127, no saturation), then pairs of those to 32 bits.
STEM_AVX2 inline __m256i dot_q8_avx2(__m256i w, __m256i x) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// R rows of Q8 w (row bytes apart) times xq: per block, the 8 lanes' int32
// dot products (DOT(w, x) of 32 int8 each) converted (exact: below 2^24) and
// added times sw * sx into the row's F32 lanes. One function per instruction
// set, since GCC inlines intrinsics only into functions of their target.
#define STEM_Q8_BLOCK(NAME, TARGET, DOT)                                                                       \
  template <int R, bool Prefetch>                                                                              \
  TARGET inline void NAME(float* y, const uint8_t* w, const uint8_t* xq, int64_t nb, int64_t row, int64_t pf, \
                          bool accumulate) {                                                                   \
    __m256 acc[R];                                                                                             \
    for (int j = 0; j < R; ++j) acc[j] = _mm256_setzero_ps();                                                  \
    for (int64_t b = 0; b < nb; ++b) {                                                                         \
      const uint8_t* xb = xq + b * 36;                                                                         \
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 4));                        \
      float sx;                                                                                                \
      std::memcpy(&sx, xb, 4);                                                                                 \
      for (int j = 0; j < R; ++j) {                                                                            \
        const uint8_t* blk = w + j * row + b * 36;                                                             \
        if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(blk + pf), _MM_HINT_T1);                      \
        float sw;                                                                                              \
        std::memcpy(&sw, blk, 4);                                                                              \
        const __m256i d = DOT(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 4)), xv);             \
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(sw * sx), acc[j]);                      \
      }                                                                                                        \
    }                                                                                                          \
    for (int j = 0; j < R; ++j) store(y + j, hsum8(acc[j]), accumulate);                                       \
  }
STEM_Q8_BLOCK(block_q8_avx2, STEM_AVX2, dot_q8_avx2)

STEM_AVX2 void rows_q8_avx2(float* y, const uint8_t* W, const uint8_t* xq, int64_t r0, int64_t r1, int64_t in,
                            bool accumulate) {
  const int64_t row = q8_row_bytes(in), nb = (in + 31) / 32;
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8) block_q8_avx2<8, false>(y + r, W + r * row, xq, nb, row, 0, accumulate);
  if (r + 4 <= r1) {
    block_q8_avx2<4, false>(y + r, W + r * row, xq, nb, row, 0, accumulate);
    r += 4;
  }
  for (; r < r1; ++r) block_q8_avx2<1, false>(y + r, W + r * row, xq, nb, row, 0, accumulate);
}

// ---------------------------------------------------------------- AVX-512
#define STEM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

// (_mm512_reduce_add_ps would do, but trips GCC 12's -Wmaybe-uninitialized.)
STEM_AVX512 inline float hsum16(__m512 v) {
  const __m512 s = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));  // halves added
  return hsum8(_mm512_castps512_ps256(s));
}

// R rows of F32 w times x, one 64-byte line of each row per step; a masked
// load takes the in % 16 tail. With Prefetch it also asks for the line pf
// elements further on in each row to be brought into L2.
template <int R, bool Prefetch>
STEM_AVX512 inline void block_avx512(float* y, const float* w, const float* x, int64_t in, int64_t pf,
                                     bool accumulate) {
  __m512 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
  const int64_t n16 = in / 16 * 16;
  int64_t i = 0;
  for (; i < n16; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int j = 0; j < R; ++j) {
      if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + j * in + i + pf), _MM_HINT_T1);
      acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(w + j * in + i), xv, acc[j]);
    }
  }
  if (i < in) {
    const __mmask16 m = static_cast<__mmask16>((1u << (in - i)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    for (int j = 0; j < R; ++j) acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + j * in + i), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) store(y + j, hsum16(acc[j]), accumulate);
}

// R rows of BF16 w times x, with xeo = x's even elements then its odd ones,
// each half padded with zeros to whole lines ((in + 31) / 32 * 16 floats).
template <int R, bool Prefetch>
STEM_AVX512 inline void block_bf16_avx512(float* y, const uint16_t* w, const float* xeo, int64_t in, int64_t pf,
                                          bool accumulate) {
  const float* xe = xeo;
  const float* xo = xeo + (in + 31) / 32 * 16;
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
  const int64_t n32 = in / 32 * 32;
  int64_t i = 0;
  for (; i < n32; i += 32) {
    const __m512 xev = _mm512_loadu_ps(xe + i / 2), xov = _mm512_loadu_ps(xo + i / 2);
    for (int j = 0; j < R; ++j) {
      if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + j * in + i + pf), _MM_HINT_T1);
      const __m512i v = _mm512_loadu_si512(w + j * in + i);
      acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xev, acc[j]);
      acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, high)), xov, acc[j]);
    }
  }
  if (i < in) {  // the last partial line: weights past the row read as zero
    const __mmask32 m = static_cast<__mmask32>((1ull << (in - i)) - 1u);
    const __m512 xev = _mm512_loadu_ps(xe + i / 2), xov = _mm512_loadu_ps(xo + i / 2);
    for (int j = 0; j < R; ++j) {
      const __m512i v = _mm512_maskz_loadu_epi16(m, w + j * in + i);
      acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xev, acc[j]);
      acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, high)), xov, acc[j]);
    }
  }
  for (int j = 0; j < R; ++j) store(y + j, hsum16(acc[j]), accumulate);
}


// kRows rows a pass, then 8, 4, 1 for the remainder: block<R, Prefetch>(r)
// computes rows [r, r + R). Measured choices (docs/performance.md, "Decode
// kernels"): a pass of 16 rows beats 8 and 4, since a core's memory-level
// parallelism, not DRAM, is the limit on one thread; prefetching the next
// block's lines into L2 (_MM_HINT_T1) lets the L2 keep more misses in flight
// than the core's L1 alone. On an AMD Zen 4 that made M-shape decode 25%
// faster in F32, 55-75% in BF16 and 15-30% in Q8, where the non-temporal
// prefetch (_MM_HINT_NTA) measured before gained F32 nothing. Every dtype
// takes the next block, however far: BF16 and Q8 had taken 512 bytes ahead in
// the row past 32 KB a block, which was 3-27% (BF16) and 13% (Q8) slower on
// rows 1376 and 2752 wide (docs/performance.md).
template <bool PrefetchFull, class Block>
STEM_AVX512 inline void passes(int64_t r0, int64_t r1, Block&& block) {
  constexpr int R = kRows;
  int64_t r = r0;
  for (; r + R <= r1; r += R) block(std::integral_constant<int, R>{}, std::bool_constant<PrefetchFull>{}, r);
  if (r + 8 <= r1) {
    block(std::integral_constant<int, 8>{}, std::false_type{}, r);
    r += 8;
  }
  if (r + 4 <= r1) {
    block(std::integral_constant<int, 4>{}, std::false_type{}, r);
    r += 4;
  }
  for (; r < r1; ++r) block(std::integral_constant<int, 1>{}, std::false_type{}, r);
}

STEM_AVX512 void rows_avx512(float* y, const float* W, const float* x, int64_t r0, int64_t r1, int64_t in,
                             bool accumulate) {
  passes<true>(r0, r1, [&](auto R, auto pf, int64_t r) {
    block_avx512<decltype(R)::value, decltype(pf)::value>(y + r, W + r * in, x, in, kRows * in, accumulate);
  });
}

// BF16, x being the de-interleaved xeo.
STEM_AVX512 void rows_bf16_avx512(float* y, const uint16_t* W, const float* xeo, int64_t r0, int64_t r1, int64_t in,
                                  bool accumulate) {
  passes<true>(r0, r1, [&](auto R, auto prefetch, int64_t r) {
    block_bf16_avx512<decltype(R)::value, decltype(prefetch)::value>(y + r, W + r * in, xeo, in, kRows * in,
                                                                     accumulate);
  });
}
// Q8 times xq with AVX512-VNNI: vpdpbusd (|w| unsigned times x with w's sign)
// gives the 8 lanes' int32 sums in one instruction; on 256-bit vectors, so a
// block is one register and Zen 4 runs each at full rate.
#define STEM_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
STEM_VNNI inline __m256i dot_q8_vnni(__m256i w, __m256i x) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}
STEM_Q8_BLOCK(block_q8_vnni, STEM_VNNI, dot_q8_vnni)

STEM_VNNI void rows_q8_vnni(float* y, const uint8_t* W, const uint8_t* xq, int64_t r0, int64_t r1, int64_t in,
                            bool accumulate) {
  const int64_t row = q8_row_bytes(in), nb = (in + 31) / 32;
  passes<true>(r0, r1, [&](auto R, auto prefetch, int64_t r) {
    block_q8_vnni<decltype(R)::value, decltype(prefetch)::value>(y + r, W + r * row, xq, nb, row, kRows * row,
                                                                 accumulate);
  });
}
#endif  // STEM_MATVEC_X86

// ---------------------------------------------------------------- dispatch
template <class T>
using RowsFn = void (*)(float*, const T*, const float*, int64_t, int64_t, int64_t, bool);

MatvecPath detect_path() {
#ifdef STEM_MATVEC_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return MatvecPath::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return MatvecPath::kAvx2;
#endif
  return MatvecPath::kPortable;
}

std::atomic<int>& path_cap() {
  static std::atomic<int> cap{static_cast<int>(MatvecPath::kAvx512)};
  return cap;
}

template <class T>
RowsFn<T> rows_fn() {
  switch (matvec_path()) {
#ifdef STEM_MATVEC_X86
    case MatvecPath::kAvx512:
      if constexpr (sizeof(T) == 2) return &rows_bf16_avx512;
      else return &rows_avx512;
    case MatvecPath::kAvx2:
      return &rows_avx2<T>;
#endif
    default:
      return &rows_portable<T>;
  }
}

using Q8RowsFn = void (*)(float*, const uint8_t*, const uint8_t*, int64_t, int64_t, int64_t, bool);

bool has_vnni() {
#ifdef STEM_MATVEC_X86
  static const bool vnni = (__builtin_cpu_init(), __builtin_cpu_supports("avx512vnni"));
  return vnni;
#else
  return false;
#endif
}

Q8RowsFn rows_q8_fn() {
#ifdef STEM_MATVEC_X86
  if (matvec_path() == MatvecPath::kAvx512 && has_vnni()) return &rows_q8_vnni;
  if (matvec_path() >= MatvecPath::kAvx2) return &rows_q8_avx2;
#endif
  return &rows_q8_portable;
}

// The x of each kind of job: x itself for F32; for BF16 x or x de-interleaved
// (the AVX-512 kernel); for Q8 x quantized as a Q8 row.
struct Xs {
  const float* x;
  const float* x16;
  const uint8_t* xq;
};

// Rows [r0, r1) of one job.
void run_rows(const MatvecJob& j, const Xs& xs, int64_t in, int64_t r0, int64_t r1, RowsFn<float> f32,
              RowsFn<uint16_t> bf16, Q8RowsFn q8) {
  if (r0 >= r1) return;
  const float* x = xs.x;
  const float* x16 = xs.x16;
  if (j.q8)
    q8(j.y, static_cast<const uint8_t*>(j.W), xs.xq, r0, r1, in, j.accumulate);
  else if (j.bf16)
    bf16(j.y, static_cast<const uint16_t*>(j.W), x16, r0, r1, in, j.accumulate);
  else
    f32(j.y, static_cast<const float*>(j.W), x, r0, r1, in, j.accumulate);
}

// Thread t of nt takes the bytes [total*t/nt, total*(t+1)/nt) of the jobs laid
// end to end, rounded to whole passes of kRows rows, so that the shares tile
// every job exactly.
int64_t row_bytes_of(const MatvecJob& j, int64_t in) {
  return j.q8 ? q8_row_bytes(in) : in * (j.bf16 ? 2 : 4);
}

void run_share(const MatvecJob* jobs, int n_jobs, const Xs& xs, int64_t in, int t, int nt, int64_t total,
               RowsFn<float> f32, RowsFn<uint16_t> bf16, Q8RowsFn q8) {
  const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
  int64_t base = 0;  // bytes before job i
  for (int i = 0; i < n_jobs; ++i) {
    const MatvecJob& j = jobs[i];
    const int64_t row_bytes = row_bytes_of(j, in), bytes = j.out * row_bytes;
    // Row where a share starting at byte b begins inside this job.
    auto row_at = [&](int64_t b) {
      if (b <= base) return int64_t{0};
      if (b >= base + bytes) return j.out;
      const int64_t r = (b - base + row_bytes / 2) / row_bytes;  // nearest row
      return std::min(j.out, (r + kRows / 2) / kRows * kRows);
    };
    run_rows(j, xs, in, row_at(lo), row_at(hi), f32, bf16, q8);
    base += bytes;
  }
}

}  // namespace

MatvecPath matvec_best_path() {
  static const MatvecPath best = detect_path();
  return best;
}

MatvecPath matvec_path() {
  return static_cast<MatvecPath>(
      std::min(path_cap().load(std::memory_order_relaxed), static_cast<int>(matvec_best_path())));
}

void set_matvec_path(MatvecPath p) { path_cap().store(static_cast<int>(p), std::memory_order_relaxed); }

void matvec_batch(const MatvecJob* jobs, int n_jobs, const float* x, int64_t in) {
  STEM_CHECK(n_jobs >= 0 && in >= 0);
  int64_t total = 0, work = 0;
  for (int i = 0; i < n_jobs; ++i) {
    STEM_CHECK(jobs[i].out >= 0 && (jobs[i].out == 0 || (jobs[i].y && (jobs[i].W || in == 0))));
    total += jobs[i].out * row_bytes_of(jobs[i], in);
    work += jobs[i].out * in * (jobs[i].q8 ? 2 : jobs[i].bf16 ? 1 : 4);
  }
  if (in == 0) {  // empty dot products
    for (int i = 0; i < n_jobs; ++i)
      if (!jobs[i].accumulate) std::fill(jobs[i].y, jobs[i].y + jobs[i].out, 0.0f);
    return;
  }
  const RowsFn<float> f32 = rows_fn<float>();
  const RowsFn<uint16_t> bf16 = rows_fn<uint16_t>();
  const Q8RowsFn q8 = rows_q8_fn();
  Xs xs{x, x, nullptr};
  bool any_bf16 = false, any_q8 = false;
  for (int i = 0; i < n_jobs; ++i) {
    any_bf16 = any_bf16 || (jobs[i].bf16 && !jobs[i].q8);
    any_q8 = any_q8 || jobs[i].q8;
  }
  thread_local std::vector<float> xeo;  // the caller's (workers read them)
  thread_local std::vector<uint8_t> xq;
#ifdef STEM_MATVEC_X86
  if (any_bf16 && bf16 == &rows_bf16_avx512) {
    xeo.resize(static_cast<size_t>((in + 31) / 32 * 32));
    deinterleave_bf16_x(xeo.data(), x, in);
    xs.x16 = xeo.data();
  }
#endif
  if (any_q8) {
    xq.resize(static_cast<size_t>(q8_row_bytes(in)));
    quantize_q8_row(xq.data(), x, in);
    xs.xq = xq.data();
  }
  if (work < kParallelWork || omp_in_parallel() || omp_get_max_threads() == 1) {
    run_share(jobs, n_jobs, xs, in, 0, 1, total, f32, bf16, q8);
    return;
  }
#pragma omp parallel
  run_share(jobs, n_jobs, xs, in, omp_get_thread_num(), omp_get_num_threads(), total, f32, bf16, q8);
}

void matvec(float* y, const float* W, const float* x, int64_t out, int64_t in, bool accumulate) {
  const MatvecJob job{y, W, out, false, accumulate};
  matvec_batch(&job, 1, x, in);
}

void matvec_bf16(float* y, const uint16_t* W, const float* x, int64_t out, int64_t in,
                 bool accumulate) {
  const MatvecJob job{y, W, out, true, accumulate};
  matvec_batch(&job, 1, x, in);
}

void matvec_q8(float* y, const uint8_t* W, const float* x, int64_t out, int64_t in, bool accumulate) {
  const MatvecJob job{y, W, out, false, accumulate, true};
  matvec_batch(&job, 1, x, in);
}

}  // namespace stem::kernels
