// Ops of the inference path (KV-cache decoding, batch 1), beside the training
// ops of kernels.h: attention of a chunk of new queries against a key/value
// cache, and a matrix-vector product for the one-token step. CPU versions in
// backends/cpu/attention_cached.cpp. They know nothing of layers or caches'
// owners; no backward (inference only).
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

// y[out] = W[out, in] x[in] (+ y when accumulate): one row of linear_forward,
// rows of W split across threads. Bound by reading W once.
void matvec(float* y, const float* W, const float* x, int64_t out, int64_t in,
            bool accumulate = false);

}  // namespace stem::kernels
