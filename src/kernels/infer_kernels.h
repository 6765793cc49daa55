// Ops of the inference path (KV-cache decoding, batch 1), beside the training
// ops of kernels.h: attention of a chunk of new queries against a key/value
// cache, matrix-vector products for the one-token step (F32 or BF16 weights,
// several matrices sharing one x in one parallel region), the linear layer of
// a prefill chunk with BF16 weights, and BF16 <-> F32 row conversions. CPU
// versions in backends/cpu/attention_cached.cpp, matvec.cpp and linear_bf16.cpp.
// They know nothing of layers or caches' owners; no backward (inference only).
//
// BF16 weights are raw uint16_t bit patterns (the upper half of an IEEE float);
// activations and accumulation stay F32.
//
// Dimension legend as in kernels.h, plus:
//   n    rows of the chunk (new positions pos0 .. pos0+n-1)
//   ctx  keys in the cache after the chunk is written (= pos0 + n)
#pragma once

#include <cstdint>

namespace stem::kernels {

// Causal grouped-query attention of n queries at absolute positions
// pos0 .. pos0+n-1 against a cache holding the keys and values of positions
// 0 .. pos0+n-1 (the chunk's own keys already written, k after RoPE):
//   out[i, h] = softmax_j<=pos0+i (q[i,h] . k[j, h/(H/Hkv)] / sqrt(hd)) v[j, ...]
// q, out [n, H, hd]; k_cache, v_cache [>= pos0+n, Hkv, hd];
// scratch [H, n, pos0+n] floats (scores), owned by the caller so that a decode
// step allocates nothing. Same arithmetic as attention_forward (scaled scores,
// max-subtracted exp), so the two agree to float round-off.
void attention_cached_forward(float* out, float* scratch, const float* q, const float* k_cache,
                              const float* v_cache, int64_t n, int64_t pos0, int64_t H,
                              int64_t Hkv, int64_t hd);
// Floats of scratch attention_cached_forward needs.
inline int64_t attention_cached_scratch(int64_t n, int64_t pos0, int64_t H) {
  return H * n * (pos0 + n);
}

// The decode step of several sequences at once, each with its own cache:
// query i (one row each) reads row queries[i].row of q, attends to keys
// 0 .. queries[i].ctx-1 of the cache of slot queries[i].slot (which starts
// at k_cache + slot * slot_stride, laid out [>= ctx, Hkv, hd], its own key
// already written) and writes the same row of out. q, out [rows, H, hd];
// queries a host array; scratch [n_queries, H, max ctx] floats. Each
// (query, head) pair is the one-row case of attention_cached_forward, with the
// same arithmetic; the pairs of all queries are split across threads
// together, so a pass over many short caches is one parallel region, not one
// serial call per sequence. Rows of different queries must differ.
struct CachedQuery {
  int64_t row = 0, slot = 0, ctx = 0;
};
void attention_cached_slots_forward(float* out, float* scratch, const float* q, const float* k_cache,
                                    const float* v_cache, int64_t slot_stride, const CachedQuery* queries,
                                    int64_t n_queries, int64_t H, int64_t Hkv, int64_t hd);
// Floats of scratch attention_cached_slots_forward needs.
inline int64_t attention_cached_slots_scratch(int64_t n_queries, int64_t max_ctx, int64_t H) {
  return n_queries * H * max_ctx;
}

// ---------------------------------------------------------------- decode matvecs
// y[out] = W[out, in] x[in] (+ y when accumulate): one row of linear_forward,
// rows of W split across threads. Bound by reading W once; F32 accumulation
// (FMA, several partial sums), so it agrees with linear_forward to round-off.
// y must not overlap W or x.
void matvec(float* y, const float* W, const float* x, int64_t out, int64_t in,
            bool accumulate = false);
// The same with BF16 weights W[out, in]: each weight widened exactly to F32,
// products and sums in F32 (x is not rounded), so the result equals matvec on
// the widened W up to summation order. Reads half the bytes of matvec.
void matvec_bf16(float* y, const uint16_t* W, const float* x, int64_t out, int64_t in,
                 bool accumulate = false);

// One product of a fused call: y[out] = W[out, in] x (+ y when accumulate),
// W F32 (const float*), BF16 (const uint16_t*) as `bf16` says, or Q8 rows
// (q8_row_bytes(in) bytes each) as `q8` says.
struct MatvecJob {
  float* y = nullptr;
  const void* W = nullptr;
  int64_t out = 0;
  bool bf16 = false;
  bool accumulate = false;
  bool q8 = false;
};
// Several products of the same x[in] (q/k/v, or gate/up) in one parallel
// region: the rows of all jobs are split across threads by bytes, so each
// thread streams one contiguous share and there is one fork/join instead of
// n_jobs (a fork/join costs microseconds, as much as a small matvec). Same
// results as separate matvec / matvec_bf16 calls. No y may overlap another
// job's y, any W, or x.
void matvec_batch(const MatvecJob* jobs, int n_jobs, const float* x, int64_t in);

// y[n, out] = x[n, in] W[out, in]^T (+ y when accumulate) for a few rows
// (n <= kMatvecRowsMax, the sequences of a batched decode step), W read once
// for all of them. Each row of y equals matvec on that row of x bit for bit
// (same accumulation order and reduction), so batching changes no result.
inline constexpr int64_t kMatvecRowsMax = 16;
void matvec_rows(float* y, const float* W, const float* x, int64_t n, int64_t out, int64_t in,
                 bool accumulate = false);
// The same with BF16 W[out, in]: each row of y equals matvec_bf16 on that row
// of x bit for bit.
void matvec_rows_bf16(float* y, const uint16_t* W, const float* x, int64_t n, int64_t out, int64_t in,
                      bool accumulate = false);

// Which code path the decode kernels (the matvecs, and the one-row case of
// attention_cached_forward) take: the best one the CPU supports unless capped
// (tests run every path on one machine). Not thread-safe to change while one
// of them runs.
enum class MatvecPath { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
MatvecPath matvec_path();
MatvecPath matvec_best_path();  // what this CPU supports
void set_matvec_path(MatvecPath p);  // capped at matvec_best_path()

// ---------------------------------------------------------------- Q8 weights
// A Q8 row of n values (tensor.h, DType::Q8): ceil(n / 32) blocks, each an F32
// scale then 32 int8, value = q * scale, the last block padded with zeros.
inline int64_t q8_row_bytes(int64_t n) { return (n + 31) / 32 * 36; }
// Each block's scale is its largest |value| / 127 (0 for a zero block) and
// q = round(value / scale) to nearest even: an error of at most scale / 2.
// Rows of n values; one thread (callers quantize a row at a time).
void quantize_q8_row(uint8_t* dst, const float* src, int64_t n);
// dst[i] = q * scale, exactly the value every Q8 kernel multiplies by.
void dequantize_q8_row(float* dst, const uint8_t* src, int64_t n);
// The matvec with Q8 weights W[out] rows: x is quantized as a Q8 row (once a
// call), each block's 32 products summed exactly in int32 and added times
// the two scales' product in F32, so the result equals the product of the
// dequantized W and the dequantized x up to F32 summation, the same bits on
// every code path. Reads 1.125 bytes a weight.
void matvec_q8(float* y, const uint8_t* W, const float* x, int64_t out, int64_t in, bool accumulate = false);
// y[N,out] = x[N,in] W^T (+ y) with Q8 W, as linear_forward_bf16 (panels
// dequantized into scratch, then sgemm; x not quantized), but N = 1 is
// matvec_q8; scratch as linear_bf16_scratch.
void linear_forward_q8(float* y, const float* x, const uint8_t* W, int64_t N, int64_t in, int64_t out,
                       bool accumulate, float* scratch);

// ---------------------------------------------------------------- BF16 weights
// y[N,out] = x[N,in] W[out,in]^T (+ y when accumulate) with BF16 W: panels of
// W widened to F32 in `scratch`, then oneDNN's sgemm on each panel (oneDNN 2.6
// has no BF16 sgemm), so a widening is shared by the N rows of the chunk.
// scratch: at least linear_bf16_scratch(in, out) floats, owned by the caller;
// contents on return are unspecified. N == 1 goes to matvec_bf16 (no scratch).
void linear_forward_bf16(float* y, const float* x, const uint16_t* W, int64_t N, int64_t in,
                         int64_t out, bool accumulate, float* scratch);
// Floats of scratch linear_forward_bf16 needs for a W of numel = in*out
// elements: min(numel, 2^19), 2 MiB at most. It depends on the size of W
// only, so one buffer sized for the largest matrix serves them all.
inline constexpr int64_t kLinearBf16ScratchMax = int64_t{1} << 19;
inline int64_t linear_bf16_scratch(int64_t numel) {
  return numel < kLinearBf16ScratchMax ? numel : kLinearBf16ScratchMax;
}
inline int64_t linear_bf16_scratch(int64_t in, int64_t out) { return linear_bf16_scratch(in * out); }

// dst[i] = the F32 value of BF16 src[i] (exact). Vectorised, one thread.
void bf16_to_f32_row(float* dst, const uint16_t* src, int64_t n);
// dst[i] = src[i] rounded to BF16, to nearest even (as core::float_to_bf16:
// NaN stays a quiet NaN of the same sign, overflow rounds to inf).
void f32_to_bf16_row(uint16_t* dst, const float* src, int64_t n);

}  // namespace stem::kernels
