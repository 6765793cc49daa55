// BF16 GEMM on the CPU: C (F32) = alpha op(A) op(B) + beta C with A and B in
// BF16, products accumulated in F32, through oneDNN's matmul primitive (its
// brgemm kernels use AVX512-BF16 dot products, or AMX where the CPU has it).
// Primitives are made once per shape, strides, alpha and beta, and kept in a
// per-thread cache with that thread's oneDNN stream, so that two threads (or
// an OpenMP worker inside a parallel region) never share one. Also: the check
// of whether the CPU runs BF16 natively and the parallel rounding of an F32
// array to BF16 (the BF16 peak is beside the F32 one in gemm.cpp).
//
// Not here: the one-row (decode) BF16 products (matvec.cpp) and the prefill
// linear with BF16 weights and F32 activations (linear_bf16.cpp).
#include <omp.h>

#include <algorithm>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float>;

struct ThreadMatmuls {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, dnnl::matmul> cache;
};

ThreadMatmuls& thread_matmuls() {
  thread_local ThreadMatmuls m;
  return m;
}

// A row-major [rows, cols] matrix with leading dimension ld, read transposed
// when `trans`: the logical [r, c] operand of the product.
dnnl::memory::desc operand(bool trans, int64_t r, int64_t c, int64_t ld, dnnl::memory::data_type dt) {
  return dnnl::memory::desc({r, c}, dt, trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1});
}

dnnl::matmul make_matmul(const Key& key, const dnnl::engine& engine) {
  const auto [ta, tb, M, N, K, lda, ldb, ldc, alpha, beta] = key;
  using dt = dnnl::memory::data_type;
  const auto a = operand(ta, M, K, lda, dt::bf16);
  const auto b = operand(tb, K, N, ldb, dt::bf16);
  const auto c = operand(false, M, N, ldc, dt::f32);
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, engine));
}

}  // namespace

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  STEM_CHECK(M >= 0 && N >= 0 && K >= 0);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // oneDNN refuses empty reductions: C = beta C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  ThreadMatmuls& t = thread_matmuls();
  const Key key{trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta};
  auto it = t.cache.find(key);
  if (it == t.cache.end()) {
    try {
      it = t.cache.emplace(key, make_matmul(key, t.engine)).first;
    } catch (const dnnl::error& e) {
      STEM_CHECKF(false, "oneDNN BF16 matmul %ldx%ldx%ld (trans %d %d): %s", static_cast<long>(M),
                  static_cast<long>(N), static_cast<long>(K), trans_a, trans_b, e.what());
    }
  }
  using dt = dnnl::memory::data_type;
  dnnl::memory ma(operand(trans_a, M, K, lda, dt::bf16), t.engine, const_cast<uint16_t*>(A));
  dnnl::memory mb(operand(trans_b, K, N, ldb, dt::bf16), t.engine, const_cast<uint16_t*>(B));
  dnnl::memory mc(operand(false, M, N, ldc, dt::f32), t.engine, C);
  it->second.execute(t.stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  t.stream.wait();
}

bool cpu_has_bf16() {
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  const unsigned bf16 = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
  return (isa & bf16) == bf16;
}

void round_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1 && !omp_in_parallel())
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    f32_to_bf16_row(dst + i0, src + i0, std::min(kChunk, n - i0));
  }
}

}  // namespace stem::kernels
