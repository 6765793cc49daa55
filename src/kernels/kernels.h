// The ops of the model, as forward/backward pairs of free functions on raw F32
// pointers with explicit dimensions (CPU implementations in backends/cpu/,
// scalar oracles in kernels/ref/). A kernel knows nothing of layers or models.
//
// Dimension legend (the contract's names):
//   B batch, T sequence length, N = B*T rows, d hidden, f FFN width,
//   V vocabulary, H query heads, Hkv key/value heads, hd head dim, E experts,
//   R rows of a row source (a whole table, or a staging buffer of unique rows).
// All arrays are row-major and contiguous. Conventions:
//   - Backward functions ACCUMULATE into parameter gradients (dW +=) so that
//     micro-batches add up; the caller zeroes them at the start of a step.
//   - Activation gradients named in "(+=)" accumulate (residual stream), the
//     others are overwritten.
//   - Multi-threaded with OpenMP inside; call them from one thread.
#pragma once

#include <cstdint>
#include <vector>

namespace stem::kernels {

// ---------------------------------------------------------------- grouping
// Groups N positions by an integer key in [0, K): the distinct keys in
// ascending order, each position's slot among them, and the positions of each
// slot (CSR). Built once per step from the token ids; serves the row-sparse
// table gradients (key = token id) and hash-MoE routing (key = expert).
struct RowIndex {
  std::vector<int32_t> unique;   // [U] distinct keys, ascending
  std::vector<int32_t> slot;     // [N] position -> index into unique
  std::vector<int32_t> offsets;  // [U+1] CSR offsets into `order`
  std::vector<int32_t> order;    // [N] positions grouped by slot, ascending within a slot
  // Optional [U]: the row of a gradient block that slot u accumulates into
  // (empty: row u). Lets micro-batches add into the rows of a whole step.
  std::vector<int32_t> dest;
  int64_t n_unique() const { return static_cast<int64_t>(unique.size()); }
};
// Every key must lie in [0, K) (checked: a violation is a bug of the caller,
// which validates token ids first).
RowIndex build_row_index(const int32_t* keys, int64_t N, int64_t K);

// ---------------------------------------------------------------- GEMM
// C[M,N] = alpha * op(A) op(B) + beta * C with op(X) = X or X^T; row-major with
// leading dimensions lda, ldb, ldc (elements). Backed by oneDNN.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

// Median GFLOP/s of an n x n x n gemm over `reps` runs: this machine's F32
// peak as MFU's denominator.
double gemm_peak_gflops(int64_t n, int reps);

// The same product with A and B in BF16 (uint16_t bit patterns, the upper
// half of an IEEE float), every product and sum in F32, C in F32: oneDNN's
// matmul (AVX512-BF16 dot products, or AMX). Mixed-precision training
// (Precision::BF16) runs its linear layers through it.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);
// Whether this CPU multiplies BF16 natively (oneDNN's effective ISA includes
// AVX512-BF16; the environment variable ONEDNN_MAX_CPU_ISA=AVX512_CORE
// lowers it, which is how a CPU without it is simulated). Without it oneDNN
// still computes gemm_bf16, on a reference path many times slower than F32.
bool cpu_has_bf16();
// The BF16 peak, as gemm_peak_gflops.
double gemm_bf16_peak_gflops(int64_t n, int reps);
// dst[i] = src[i] rounded to BF16 to nearest even (f32_to_bf16_row), over a
// whole array, multi-threaded.
void round_to_bf16(uint16_t* dst, const float* src, int64_t n);

// y[N,out] = x[N,in] W[out,in]^T  (+ y when accumulate)
void linear_forward(float* y, const float* x, const float* W, int64_t N, int64_t in,
                    int64_t out, bool accumulate = false);
// dW[out,in] += dy^T x; dx[N,in] = dy W (or += when accumulate_dx). dx or dW may be null.
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx);

// ---------------------------------------------------------------- rows
// out[N,C] = rows[row_of[n], :]   (rows is [R,C])
void gather_rows(float* out, const float* rows, const int32_t* row_of, int64_t N, int64_t C);
// drows[dest(u),C] += sum over positions n of slot u of dsrc[n, :]   (row-sparse
// gradient; dest(u) = index.dest[u], or u when index.dest is empty)
void scatter_add_rows(float* drows, const float* dsrc, const RowIndex& index, int64_t C);

// Token embedding: h[N,d] = table[ids[n]]; backward accumulates into the
// row-sparse gradient drows[U,d] of the distinct ids (index built from ids).
void embedding_forward(float* h, const float* table, const int32_t* ids, int64_t N, int64_t d);
void embedding_backward(float* drows, const float* dh, const RowIndex& index, int64_t d);
// The same into a dense [V,d] gradient (tied embeddings, whose gradient is the
// head's): dtable[index.unique[u]] += the rows of slot u.
void embedding_backward_dense(float* dtable, const float* dh, const RowIndex& index, int64_t d);

// ---------------------------------------------------------------- elementwise
// out[n] = a[n] + b[n] (the residual stream); out must not overlap a or b.
void add(float* out, const float* a, const float* b, int64_t n);
// dst[n] += src[n]; dst must not overlap src.
void add_inplace(float* dst, const float* src, int64_t n);
// x[r, :] *= s[r] for r < R (x is [R,C]).
void scale_rows(float* x, const float* s, int64_t R, int64_t C);

// ---------------------------------------------------------------- RMSNorm
// y = x / sqrt(mean(x^2) + eps) * w; rstd[N] saved for backward.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N,
                     int64_t d, float eps);
// dx[N,d] (+=), dw[d] +=
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t d);

// ---------------------------------------------------------------- RoPE
// Hugging Face "rotate_half" convention. cos/sin are [P, hd/2] tables (angles in
// double, stored as float); row p holds position p. x is [B, T, nh, hd]; the
// sequence position of row (b, t) is pos0 + t, or pos0 + pos[b*T + t] when pos
// ([B*T], host memory) is given: positions that restart at each document
// (doc_positions below). Every position must lie in [0, P). In place.
void rope_tables(float* cos, float* sin, int64_t P, int64_t hd, double theta);
void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T,
                  int64_t nh, int64_t hd, int64_t pos0, const int32_t* pos);
// In place: dx = R^T dy (the inverse rotation).
void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T,
                   int64_t nh, int64_t hd, int64_t pos0, const int32_t* pos);

// ---------------------------------------------------------------- documents
// Host helpers (not ops) for windows that hold several documents, each stored
// as BOS ids... EOS. out[b*T + t] = the first position (within sequence b) of
// the document holding position t: 0 at t = 0; for t > 0, t when tokens[t] is
// bos or tokens[t-1] is eos, else out[b*T + t-1]. A negative bos or eos turns
// its rule off (both negative: one document per sequence). tokens, out [B*T].
void doc_starts(int32_t* out, const int32_t* tokens, int64_t B, int64_t T, int32_t bos,
                int32_t eos);
// pos[b*T + t] = t - doc_start[b*T + t]: each document's positions from 0.
void doc_positions(int32_t* pos, const int32_t* doc_start, int64_t B, int64_t T);

// ---------------------------------------------------------------- attention
// Causal grouped-query attention, softmax(q k^T / sqrt(hd)) v, query head j
// reading kv head j / (H/Hkv). q, out [B,T,H,hd]; k, v [B,T,Hkv,hd];
// lse [B,H,T] the log-sum-exp of each score row, saved so that backward
// recomputes the probabilities instead of storing [T,T] per head.
// doc_start [B*T] (host memory, from doc_starts) masks attention across
// documents: query t of sequence b reads keys j with doc_start[b*T+t] <= j <= t
// (0 <= doc_start[b*T+t] <= t). Null: plain causal attention, j <= t.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t hd,
                       const int32_t* doc_start);
// dq [B,T,H,hd], dk, dv [B,T,Hkv,hd] overwritten. doc_start as in forward.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t hd,
                        const int32_t* doc_start);

// The same with q, k, v in BF16 (rounded by the caller): the score and value
// products multiply BF16 operands with F32 accumulation (gemm_bf16); the
// softmax, lse and D = rowsum(dout * out) are F32, and the probabilities,
// dout and dS are rounded to BF16 just before their products. out, lse,
// dout, dq, dk, dv F32. Mixed-precision training (Precision::BF16).
void attention_forward_bf16(float* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start);
void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const float* out,
                             const float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                             int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start);

// ---------------------------------------------------------------- SwiGLU
// hact[N,f] = silu(g) * u, with u[n] = u_rows[u_row_of[n]] when u_row_of is
// given (the STEM case: u_rows is a [R,f] row source), else u[n] = u_rows[n].
void swiglu_forward(float* hact, const float* g, const float* u_rows, const int32_t* u_row_of,
                    int64_t N, int64_t f);
// dg[N,f], du[N,f] (per position, also in the STEM case) overwritten.
void swiglu_backward(float* dg, float* du, const float* dhact, const float* g,
                     const float* u_rows, const int32_t* u_row_of, int64_t N, int64_t f);

// Dense SwiGLU FFN: y[N,d] = (silu(x Wg^T) * (x Wu^T)) Wd^T.
// Saved activations g, u, hact [N,f]. Wg, Wu [f,d]; Wd [d,f].
void dense_ffn_forward(float* y, float* g, float* u, float* hact, const float* x,
                       const float* Wg, const float* Wu, const float* Wd, int64_t N, int64_t d,
                       int64_t f);
// dx[N,d] (+=); dWg, dWu, dWd +=; scratch [N,f] x2.
void dense_ffn_backward(float* dx, float* dWg, float* dWu, float* dWd, const float* dy,
                        const float* x, const float* g, const float* u, const float* hact,
                        const float* Wg, const float* Wu, const float* Wd, float* scratch_a,
                        float* scratch_b, int64_t N, int64_t d, int64_t f);

// STEM FFN: y[N,d] = (silu(x Wg^T) * U[t]) Wd^T, the up-projection replaced by
// the row of each position's token: U[t_n] = rows[row_of[n]] from a row source
// rows [R,f] (the whole table with row_of = token ids, or a staging buffer of
// fetched rows with row_of = slots). Saved g, hact [N,f].
void stem_ffn_forward(float* y, float* g, float* hact, const float* x, const float* Wg,
                      const float* Wd, const float* rows, const int32_t* row_of, int64_t N,
                      int64_t d, int64_t f);
// dx (+=); dWg, dWd +=; drows[U,f] += the row-sparse table gradient of the
// distinct tokens (index over token ids); scratch [N,f] x2.
void stem_ffn_backward(float* dx, float* dWg, float* dWd, float* drows, const float* dy,
                       const float* x, const float* g, const float* hact, const float* Wg,
                       const float* Wd, const float* rows, const int32_t* row_of,
                       const RowIndex& index, float* scratch_a, float* scratch_b, int64_t N,
                       int64_t d, int64_t f);

// Hash-MoE FFN: position n goes to expert e = route.unique[route.slot[n]] (route
// built from hash_table[t_n]); each expert a dense SwiGLU FFN. Wg/Wu/Wd are
// arrays of E pointers. Saved: xe [N,d] (x permuted into expert order), g, u,
// hact [N,f] in the same order.
struct MoeWeights {
  const float* const* Wg;  // E x [f,d]
  const float* const* Wu;  // E x [f,d]
  const float* const* Wd;  // E x [d,f]
};
struct MoeGrads {
  float* const* dWg;  // E x [f,d] +=
  float* const* dWu;  // E x [f,d] +=
  float* const* dWd;  // E x [d,f] +=
};
void hash_moe_forward(float* y, float* xe, float* g, float* u, float* hact, float* ye,
                      const float* x, const MoeWeights& w, const RowIndex& route, int64_t N,
                      int64_t d, int64_t f);
// dx (+=); scratch: dye [N,d], dxe [N,d], two of [N,f].
void hash_moe_backward(float* dx, const MoeGrads& dw, const float* dy, const float* xe,
                       const float* g, const float* u, const float* hact, const MoeWeights& w,
                       const RowIndex& route, float* dye, float* dxe, float* scratch_a,
                       float* scratch_b, int64_t N, int64_t d, int64_t f);

// ---------------------------------------------------------------- loss
// losses[n] = logsumexp(logits[n]) - logits[n][targets[n]]; 0 where targets[n] < 0
// (ignored). Returns the sum of losses over the counted rows.
double cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                             int64_t N, int64_t V);
// dlogits[n] = (softmax(logits[n]) - onehot(targets[n])) * scale; zero rows where
// ignored. dlogits may alias logits (in place).
void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            float scale, int64_t N, int64_t V);

// Distillation: losses[n] = (1-alpha) CE(logits[n], targets[n]) + alpha tau^2
// KL(softmax(teacher[n]/tau) || softmax(logits[n]/tau)); 0 where targets[n] < 0.
// teacher [N,V] is another model's logits for the same tokens. Returns the sum.
double distill_forward(float* losses, const float* logits, const float* teacher, const int32_t* targets,
                       float alpha, float tau, int64_t N, int64_t V);
// dlogits[n] = ((1-alpha)(softmax(z) - onehot(t)) + alpha tau (softmax(z/tau) -
// softmax(teacher/tau))) * scale; zero rows where ignored. May alias logits.
void distill_backward(float* dlogits, const float* logits, const float* teacher, const int32_t* targets,
                      float alpha, float tau, float scale, int64_t N, int64_t V);

// ---------------------------------------------------------------- optimizer
// Decoupled-weight-decay Adam (PyTorch AdamW): m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= lr * (wd p + (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)).
struct AdamWHyper {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;  // 1-based, for bias correction
};
// g may be null: a zero gradient (the moments still decay, the decay still applies).
void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamWHyper& h);
// The same over a [R,C] table whose gradient is row-sparse: drows[U,C] holds the
// gradients of rows index.unique; every other row steps with a zero gradient
// (exactly what dense AdamW does with a mostly-zero gradient).
void adamw_update_rows(float* p, float* m, float* v, const float* drows, const RowIndex& index,
                       int64_t R, int64_t C, const AdamWHyper& h);

// Lazy AdamW over a row-sparse table: only rows index.unique[u] (u < U) move.
// Row u first catches up on the steps it skipped, exactly for the moments and
// the weight decay: p *= p_decay[u], m *= m_decay[u], v *= v_decay[u]; then it
// takes a normal AdamW step with gradient drows[u]. Rows absent from the step
// are not read (no momentum-only update for them, unlike dense AdamW).
void adamw_update_rows_lazy(float* p, float* m, float* v, const float* drows,
                            const RowIndex& index, int64_t C, const float* p_decay,
                            const float* m_decay, const float* v_decay, const AdamWHyper& h);

// Sum of squares, for gradient norms: float within chunks of 4096, double
// across them (relative error ~1e-7, plenty for clipping).
double sum_squares(const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float s);

}  // namespace stem::kernels
