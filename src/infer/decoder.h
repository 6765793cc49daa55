// Decoder: the contract's forward for one sequence (batch 1) with a key/value
// cache, so that each new token costs one pass over the weights instead of a
// forward over the whole prefix. Same math as model::Transformer::forward
// (dense, STEM with the token's table row, hash-MoE through hash_table, RoPE at
// absolute positions, GQA): the logits of a position equal forward's logits at
// that position to float round-off, however the tokens were fed (one prefill,
// prefill in pieces, step by step).
//
// It does not sample (see sampler.h), does not batch sequences, and keeps no
// logits but the last position's.
//
// Ownership and threading: reads the Transformer's weights (which must outlive
// it and not change while it decodes) and owns its cache and work buffers, all
// allocated in the constructor; prefill and step allocate nothing. Not
// thread-safe; kernels use all cores inside. Several Decoders may share one
// Transformer.
//
// Cache layout per layer: k and v [capacity, Hkv, hd], row p holding position
// p; k stored after RoPE. Invariant: rows [0, position()) are valid.
//
// Failures: feeding past capacity() or an id outside [0, V) returns a Status
// and leaves the decoder as it was.
#pragma once

#include <cstdint>
#include <vector>

#include "model/transformer.h"
#include "stem/status.h"

namespace stem::infer {

class Decoder {
 public:
  // Prefill runs in chunks of at most this many positions (bounds the scratch).
  static constexpr int64_t kPrefillChunk = 64;

  // capacity() = min(max_context, max_position_embeddings); max_context <= 0
  // means max_position_embeddings.
  Decoder(const model::Transformer& model, int64_t max_context);

  // Forget the sequence: position() = 0 (the cache is overwritten lazily).
  void reset();
  // Appends n >= 1 tokens at positions position() .. position()+n-1 and returns
  // the logits [V] of the last one (valid until the next call).
  Result<const float*> prefill(const int32_t* ids, int64_t n);
  // Appends one token; its logits [V].
  Result<const float*> step(int32_t id);

  int64_t position() const { return pos_; }
  int64_t capacity() const { return cap_; }
  int64_t vocab_size() const { return V_; }
  // Cache and work buffers, for reporting.
  int64_t memory_bytes() const;

 private:
  void forward_chunk(const int32_t* ids, int64_t n);  // n <= chunk_, fits in the cache
  void linear(float* y, const float* x, const float* W, int64_t n, int64_t in, int64_t out,
              bool accumulate = false);
  void swiglu_ffn(float* y, const float* x, const float* Wg, const float* Wu, const float* Wd,
                  int64_t n);
  void hash_moe_ffn(float* y, const float* x, const model::LayerView& W, const int32_t* ids,
                    int64_t n);

  const model::Transformer& m_;
  int64_t cap_ = 0, chunk_ = 0, pos_ = 0;
  int64_t V_ = 0, d_ = 0, f_ = 0, H_ = 0, Hkv_ = 0, hd_ = 0, E_ = 0;
  float eps_ = 0.0f;

  std::vector<float> k_cache_, v_cache_;  // [L, cap, Hkv*hd] each
  // work buffers, chunk_ rows each
  std::vector<float> h_;       // [chunk, d] residual stream
  std::vector<float> a_;       // [chunk, d] normed input (attention, then FFN)
  std::vector<float> rstd_;    // [chunk]
  std::vector<float> q_;       // [chunk, H*hd] after RoPE
  std::vector<float> att_;     // [chunk, H*hd]
  std::vector<float> scores_;  // [H, chunk, cap]
  std::vector<float> g_, u_, hact_;  // [chunk, f]
  std::vector<float> y_;       // [chunk, d] FFN output
  std::vector<float> xe_, ye_;  // [chunk, d] hash-MoE rows of one expert
  std::vector<int32_t> by_expert_;  // [chunk] positions grouped by expert
  std::vector<int32_t> expert_count_;  // [E + 1]
  std::vector<float> logits_;  // [V]
};

}  // namespace stem::infer
