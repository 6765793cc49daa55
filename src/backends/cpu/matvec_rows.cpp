// Products of a few rows with F32 or BF16 weights: y[n, out] = x[n, in] W[out, in]^T
// (+ y) for n <= kMatvecRowsMax, the step of continuous batching (one
// generated token for each of n sequences). Each line of W is loaded once and
// multiplied with up to 8 rows of x held in registers (past 8, with the rest
// while the line is still in L1), so W is read from memory once for all n
// rows: at n = 8 that took 1.15 times one row's matvec, where oneDNN's sgemm
// took about twice (docs/performance.md, "Batched decode").
//
// Every (W row, x row) pair has its own 16-lane FMA accumulator over `in` in
// the order matvec's AVX-512 kernel uses, and the lanes are reduced with the
// same pairings as its hsum16, 16 accumulators at a time through a transposing
// tree. So each row of y equals, bit for bit, what matvec gives for that row
// of x alone: a sequence decoded in a batch gets the products it would get
// decoded alone.
//
// BF16 weights are widened in registers as matvec_bf16 widens them (each row
// equals matvec_bf16 bit for bit). AVX-512 only; other CPUs run matvec or
// matvec_bf16 once per row (the same results there too). Not here: one row
// (matvec.cpp), Q8 weights and more rows (linear_bf16.cpp, gemm.cpp).
#if defined(__x86_64__) && defined(__GNUC__)
#define STEM_ROWS_X86 1
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

#include <omp.h>

#include <algorithm>
#include <vector>


#include "backends/cpu/bf16_x.h"
#include "core/check.h"
#include "kernels/infer_kernels.h"

namespace stem::kernels {
namespace {

// Below this many bytes of W a call stays on one thread (as matvec).
constexpr int64_t kParallelBytes = 256 * 1024;
// How far ahead in W a block prefetches into L2, in whole blocks of about
// this many bytes (4 to 64 KB measured on an AMD Zen 4: 12 to 20 best).
constexpr int64_t kPrefetchBytes = 16 * 1024;

#ifdef STEM_ROWS_X86
#define STEM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

// The 16 sums of a[0..16), each reduced as matvec's hsum16 reduces one
// accumulator: lanes i and i+8 first, then i and i+4, i and i+2, i and i+1.
// out[m] is the sum of a[m].
STEM_AVX512 inline void reduce16(const __m512* a, float* out) {
  __m512 s1[8], s2[4], s3[2];
  for (int p = 0; p < 8; ++p) {  // [a(l0+l2), a(l1+l3), b(l0+l2), b(l1+l3)]
    const __m512 x = a[2 * p], y = a[2 * p + 1];
    s1[p] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xee));
  }
  for (int q = 0; q < 4; ++q) {  // 128-bit lane k: the 4 partial sums of a[4q + k]
    const __m512 x = s1[2 * q], y = s1[2 * q + 1];
    s2[q] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xdd));
  }
  for (int r = 0; r < 2; ++r) {  // lane k: [u0, u1] of a[8r + k], then of a[8r + 4 + k]
    const __m512d x = _mm512_castps_pd(s2[2 * r]), y = _mm512_castps_pd(s2[2 * r + 1]);
    s3[r] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // lane k: the sums of a[k], a[4 + k], a[8 + k], a[12 + k]
  const __m512 s4 = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], 0x88), _mm512_shuffle_ps(s3[0], s3[1], 0xdd));
  alignas(64) float t[16];
  _mm512_store_ps(t, s4);
  for (int m = 0; m < 16; ++m) out[m] = t[4 * (m % 4) + m / 4];
}

// R rows of W (from w) times the NB rows of x: acc[j * NB + b] over in, then y.
// Each line of this block's rows asks for the same line of a block pf
// elements further on (about kPrefetchBytes ahead) to be brought into L2.
// With only R rows streaming (not matvec's 16) the hardware prefetchers alone
// left the loop waiting on memory, and prefetching into L1 as well took miss
// buffers from the loads: the products of an M-shape pass of 8 rows took
// 8.5 ms with no prefetch, 4.9-5.7 into L1 and 3.5-4.0 into L2 (matvec's one
// row: 3.2; docs/performance.md, "Batched decode").
// One line v of 32 BF16 weights of a row into its NB accumulators: the even
// weights times each x row's even elements (xe, at x + b * ldx), then the odd
// weights times the odd ones (half floats further), as matvec_bf16 adds them.
template <int NB>
STEM_AVX512 inline void bf16_line(__m512* acc, __m512i v, __m512i high, const float* x, int64_t ldx, int64_t half) {
  const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, high));
  for (int b = 0; b < NB; ++b) {
    acc[b] = _mm512_fmadd_ps(we, _mm512_loadu_ps(x + b * ldx), acc[b]);
    acc[b] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(x + b * ldx + half), acc[b]);
  }
}

template <class T, int NB, int R, bool Prefetch = true>
STEM_AVX512 inline void block_rows(float* y, int64_t ldy, const T* w, const float* x, int64_t ldx, int64_t in,
                                   int64_t pf, bool accumulate) {
  static_assert(NB * R <= 16);
  __m512 acc[16];
  for (int m = 0; m < 16; ++m) acc[m] = _mm512_setzero_ps();
  if constexpr (sizeof(T) == 4) {
    const int64_t n16 = in / 16 * 16;
    int64_t i = 0;
    for (; i < n16; i += 16) {
      __m512 xv[NB];
      for (int b = 0; b < NB; ++b) xv[b] = _mm512_loadu_ps(x + b * ldx + i);
      for (int j = 0; j < R; ++j) {
        if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + j * in + i + pf), _MM_HINT_T1);
        const __m512 wv = _mm512_loadu_ps(w + j * in + i);
        for (int b = 0; b < NB; ++b) acc[j * NB + b] = _mm512_fmadd_ps(wv, xv[b], acc[j * NB + b]);
      }
    }
    if (i < in) {
      const __mmask16 m = static_cast<__mmask16>((1u << (in - i)) - 1u);
      __m512 xv[NB];
      for (int b = 0; b < NB; ++b) xv[b] = _mm512_maskz_loadu_ps(m, x + b * ldx + i);
      for (int j = 0; j < R; ++j) {
        const __m512 wv = _mm512_maskz_loadu_ps(m, w + j * in + i);
        for (int b = 0; b < NB; ++b) acc[j * NB + b] = _mm512_fmadd_ps(wv, xv[b], acc[j * NB + b]);
      }
    }
  } else {
    // BF16, as matvec_bf16's kernel: a line of 32 weights read as 16 dwords,
    // (dword << 16) its even weights times x's even elements, (dword &
    // 0xffff0000) its odd ones times the odd; each x row de-interleaved
    // (xe then xo, `half` floats each, zero-padded), x's loads from L1.
    const int64_t half = bf16_x_half(in);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    const int64_t n32 = in / 32 * 32;
    int64_t i = 0;
    for (; i < n32; i += 32)
      for (int j = 0; j < R; ++j) {
        if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + j * in + i + pf), _MM_HINT_T1);
        bf16_line<NB>(acc + j * NB, _mm512_loadu_si512(w + j * in + i), high, x + i / 2, ldx, half);
      }
    if (i < in) {  // the last partial line: weights past the row read as zero
      const __mmask32 m = static_cast<__mmask32>((1ull << (in - i)) - 1u);
      for (int j = 0; j < R; ++j)
        bf16_line<NB>(acc + j * NB, _mm512_maskz_loadu_epi16(m, w + j * in + i), high, x + i / 2, ldx, half);
    }
  }
  float s[16];
  reduce16(acc, s);
  for (int j = 0; j < R; ++j)
    for (int b = 0; b < NB; ++b) {
      float* o = y + b * ldy + j;
      *o = accumulate ? *o + s[j * NB + b] : s[j * NB + b];
    }
}

// Elements of W to prefetch ahead: whole blocks of R rows, about kPrefetchBytes.
template <class T>
int64_t prefetch_ahead(int64_t R, int64_t in) {
  const int64_t block = R * in * static_cast<int64_t>(sizeof(T));
  return std::max<int64_t>(1, (kPrefetchBytes + block / 2) / block) * R * in;
}

// Rows [r0, r1) of W for NB rows of x (ldx floats apart), 16 / NB rows of W
// a block, then one.
template <class T, int NB>
STEM_AVX512 void rows_nb(float* y, int64_t ldy, const T* W, const float* x, int64_t ldx, int64_t r0, int64_t r1,
                         int64_t in, bool accumulate) {
  constexpr int R = 16 / NB;
  const int64_t pf = prefetch_ahead<T>(R, in);
  int64_t r = r0;
  for (; r + R <= r1; r += R) block_rows<T, NB, R>(y + r, ldy, W + r * in, x, ldx, in, pf, accumulate);
  for (; r < r1; ++r) block_rows<T, NB, 1>(y + r, ldy, W + r * in, x, ldx, in, in, accumulate);
}

// 8 + NB rows of x (9 to 16): blocks of 2 rows of W, each multiplied with the
// first 8 rows of x and then, while its lines are still in L1, with the
// other NB; so W still comes from memory once.
template <class T, int NB>
STEM_AVX512 void rows_8_nb(float* y, int64_t ldy, const T* W, const float* x, int64_t ldx, int64_t r0, int64_t r1,
                           int64_t in, bool accumulate) {
  const int64_t pf = prefetch_ahead<T>(2, in);
  float* y2 = y + 8 * ldy;
  const float* x2 = x + 8 * ldx;
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    block_rows<T, 8, 2>(y + r, ldy, W + r * in, x, ldx, in, pf, accumulate);
    block_rows<T, NB, 2, false>(y2 + r, ldy, W + r * in, x2, ldx, in, 0, accumulate);
  }
  for (; r < r1; ++r) {
    block_rows<T, 8, 1>(y + r, ldy, W + r * in, x, ldx, in, in, accumulate);
    block_rows<T, NB, 1, false>(y2 + r, ldy, W + r * in, x2, ldx, in, 0, accumulate);
  }
}

template <class T>
using RowsNbFn = void (*)(float*, int64_t, const T*, const float*, int64_t, int64_t, int64_t, int64_t, bool);

template <class T>
RowsNbFn<T> rows_nb_fn(int64_t n) {
  switch (n) {
    case 1: return &rows_nb<T, 1>;
    case 2: return &rows_nb<T, 2>;
    case 3: return &rows_nb<T, 3>;
    case 4: return &rows_nb<T, 4>;
    case 5: return &rows_nb<T, 5>;
    case 6: return &rows_nb<T, 6>;
    case 7: return &rows_nb<T, 7>;
    case 8: return &rows_nb<T, 8>;
    case 9: return &rows_8_nb<T, 1>;
    case 10: return &rows_8_nb<T, 2>;
    case 11: return &rows_8_nb<T, 3>;
    case 12: return &rows_8_nb<T, 4>;
    case 13: return &rows_8_nb<T, 5>;
    case 14: return &rows_8_nb<T, 6>;
    case 15: return &rows_8_nb<T, 7>;
    default: return &rows_8_nb<T, 8>;
  }
}

// Rows of W split across threads in whole blocks, each thread one range.
template <class T>
void run_rows(float* y, const T* W, const float* x, int64_t ldx, int64_t n, int64_t out, int64_t in,
              bool accumulate) {
  const RowsNbFn<T> f = rows_nb_fn<T>(n);
  const int64_t R = n <= 8 ? 16 / n : 2;  // rows of W a block
  const int64_t bytes = out * in * static_cast<int64_t>(sizeof(T));
  const int nt = bytes < kParallelBytes || omp_in_parallel() ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t blocks = out / R;  // whole blocks split evenly; the last thread takes the rest
    const int64_t r0 = blocks * t / k * R, r1 = t + 1 == k ? out : blocks * (t + 1) / k * R;
    f(y, out, W, x, ldx, r0, r1, in, accumulate);
  }
}
#endif  // STEM_ROWS_X86

}  // namespace

void matvec_rows(float* y, const float* W, const float* x, int64_t n, int64_t out, int64_t in,
                 bool accumulate) {
  STEM_CHECK(n >= 0 && n <= kMatvecRowsMax && out >= 0 && in >= 0);
#ifdef STEM_ROWS_X86
  if (matvec_path() == MatvecPath::kAvx512 && in > 0 && n > 0) {
    run_rows(y, W, x, in, n, out, in, accumulate);
    return;
  }
#endif
  for (int64_t b = 0; b < n; ++b) matvec(y + b * out, W, x + b * in, out, in, accumulate);
}

void matvec_rows_bf16(float* y, const uint16_t* W, const float* x, int64_t n, int64_t out, int64_t in,
                      bool accumulate) {
  STEM_CHECK(n >= 0 && n <= kMatvecRowsMax && out >= 0 && in >= 0);
#ifdef STEM_ROWS_X86
  if (matvec_path() == MatvecPath::kAvx512 && in > 0 && n > 0) {
    // Each row of x de-interleaved as matvec_bf16 does: even elements, then
    // odd ones, each half padded with zeros to whole lines.
    const int64_t half = bf16_x_half(in);
    thread_local std::vector<float> xeo;
    xeo.resize(static_cast<size_t>(n * 2 * half));
    for (int64_t b = 0; b < n; ++b) deinterleave_bf16_x(xeo.data() + b * 2 * half, x + b * in, in);
    run_rows(y, W, xeo.data(), 2 * half, n, out, in, accumulate);
    return;
  }
#endif
  for (int64_t b = 0; b < n; ++b) matvec_bf16(y + b * out, W, x + b * in, out, in, accumulate);
}

}  // namespace stem::kernels
