// GEMM through oneDNN's sgemm (row-major, CPU dispatch at run time; OpenMP
// threads inside, one thread when called from a parallel region), the linear
// layer built on it, and the F32 and BF16 peaks (MFU's denominators).
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/check.h"
#include "kernels/kernels.h"

namespace stem::kernels {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                B, ldb, beta, C, ldc);
  STEM_CHECKF(st == dnnl_success, "dnnl_sgemm failed (status %d) M=%ld N=%ld K=%ld",
              static_cast<int>(st), static_cast<long>(M), static_cast<long>(N),
              static_cast<long>(K));
}

namespace {
// Median GFLOP/s of `reps` runs of an n x n x n product made by run(), after one untimed.
template <class Run>
double median_gflops(int64_t n, int reps, Run&& run) {
  run();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / t[t.size() / 2] / 1e9;
}
}  // namespace

double gemm_peak_gflops(int64_t n, int reps) {
  std::vector<float> A(n * n, 0.5f), B(n * n, 0.25f), C(n * n);
  return median_gflops(n, reps, [&] {
    gemm(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  });
}

double gemm_bf16_peak_gflops(int64_t n, int reps) {
  std::vector<uint16_t> A(n * n, 0x3f00), B(n * n, 0x3e80);  // 0.5, 0.25
  std::vector<float> C(n * n);
  return median_gflops(n, reps, [&] {
    gemm_bf16(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  });
}

void linear_forward(float* y, const float* x, const float* W, int64_t N, int64_t in, int64_t out,
                    bool accumulate) {
  // A short x (a prefill chunk of up to kFewRows rows) into a wider y: each
  // thread takes a contiguous block of output columns and runs a one-thread
  // sgemm on it. oneDNN's own split of such a GEMM measured up to 2.3x slower
  // on 2 threads (64 rows, 1024 -> 2752: 104 against 238 GFLOP/s; 512 -> 1376:
  // 151 against 287); with out < in it was as fast or slightly faster, so it
  // keeps those (docs/performance.md, "Decode kernels").
  constexpr int64_t kFewRows = 512;
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (nt > 1 && N <= kFewRows && out >= in && out >= 64 * nt) {
#pragma omp parallel num_threads(nt)
    {
      const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t o0 = out * t / n / 16 * 16, o1 = t + 1 == n ? out : out * (t + 1) / n / 16 * 16;
      gemm(false, true, N, o1 - o0, in, 1.0f, x, in, W + o0 * in, in, accumulate ? 1.0f : 0.0f,
           y + o0, out);
    }
    return;
  }
  gemm(false, true, N, out, in, 1.0f, x, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx) {
  if (dW) gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (dx) gemm(false, false, N, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

}  // namespace stem::kernels
