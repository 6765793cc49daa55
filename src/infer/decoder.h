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
// Weights may be F32 or BF16 (matrices; accumulation in F32). STEM tables come
// from the weight list, or from the Transformer's TableStore: then the rows of
// each chunk's distinct tokens are staged by a memory::Prefetcher, in the
// background when `prefetch` is on (the next prefill chunk is fetched while the
// current one computes; a decode step's rows while the layers before the first
// STEM layer run), synchronously when off or when the store is in RAM (a copy
// is cheaper than waking a thread). With prefetch off and an F32 store
// that maps rows in place (mmap), rows are read in place (zero copy). Every
// path hands the FFN the same row values, so logits are bitwise identical.
// Row overrides (edit overlays) must be in the store before a Decoder is made:
// whether rows can be read in place is decided once, in the constructor.
//
// Ownership and threading: reads the Transformer's weights (which must outlive
// it and not change while it decodes) and owns its cache and work buffers, all
// allocated in the constructor; prefill and step allocate nothing. Not
// thread-safe; kernels use all cores inside. Several Decoders may share one
// Transformer and decode at once from different threads (each reads the
// weights only; a shared TableStore serialises its fetches), as long as
// nothing changes the model meanwhile (tests/test_generate.cpp).
//
// Cache layout per layer: k and v [capacity, Hkv, hd], row p holding position
// p; k stored after RoPE. Invariant: rows [0, position()) are valid.
//
// Failures: feeding past capacity(), an id outside [0, V), or a table read
// error returns a Status and leaves position() as it was.
#pragma once

#include <cstdint>
#include <vector>

#include <memory>

#include "memory/prefetcher.h"
#include "model/transformer.h"
#include "stem/status.h"

namespace stem::infer {

// A weight matrix [out, in] as stored (F32 or BF16).
struct WeightMat {
  const void* p = nullptr;
  DType dtype = DType::F32;
};

struct DecoderOptions {
  int64_t max_context = 0;      // <= 0: max_position_embeddings
  int64_t prefill_chunk = 256;  // positions a prefill pass takes at once (bounds the scratch)
  bool prefetch = true;         // stage table rows on a background thread
};

class Decoder {
 public:
  // capacity() = min(max_context, max_position_embeddings).
  Decoder(const model::Transformer& model, const DecoderOptions& opt);
  Decoder(const model::Transformer& model, int64_t max_context)
      : Decoder(model, DecoderOptions{max_context}) {}
  ~Decoder();

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
  // Cache and work buffers (staging included), for reporting.
  int64_t memory_bytes() const;
  // The prefetcher staging table rows (null when tables are in the weight list
  // or read in place).
  const memory::Prefetcher* prefetcher() const { return pf_.get(); }
  memory::Prefetcher* prefetcher() { return pf_.get(); }

 private:
  using Mat = WeightMat;
  struct LayerMats {
    Mat wq, wk, wv, wo, gate, up, down;
    std::vector<Mat> e_gate, e_up, e_down;
  };
  Mat mat(int i) const;
  // n <= chunk_, fits in the cache; `ticket` stages its table rows (-1: none).
  Status forward_chunk(const int32_t* ids, int64_t n, memory::Prefetcher::Ticket ticket);
  void linear(float* y, const float* x, const Mat& W, int64_t n, int64_t in, int64_t out,
              bool accumulate = false);
  void swiglu_ffn(float* y, const float* x, const Mat& Wg, const Mat& Wu, const Mat& Wd, int64_t n);
  void hash_moe_ffn(float* y, const float* x, const model::LayerView& W, const LayerMats& M,
                    const int32_t* ids, int64_t n);

  const model::Transformer& m_;
  std::vector<LayerMats> mats_;
  Mat embed_, head_;
  std::unique_ptr<memory::Prefetcher> pf_;
  std::vector<const float*> direct_;  // [n_stem] tables read in place, when no prefetcher
  std::vector<float> wide_;           // BF16 weight panels widened for the prefill GEMM
  int64_t cap_ = 0, chunk_ = 0, pos_ = 0;
  int64_t V_ = 0, d_ = 0, f_ = 0, H_ = 0, Hkv_ = 0, hd_ = 0, E_ = 0;
  float eps_ = 0.0f;

  // Lazily committed (see core::AlignedBuffer): a long context costs memory
  // only as far as it is used.
  core::AlignedBuffer k_cache_, v_cache_;  // [L, cap, Hkv*hd] floats each
  // work buffers, chunk_ rows each
  std::vector<float> h_;       // [chunk, d] residual stream
  std::vector<float> a_;       // [chunk, d] normed input (attention, then FFN)
  std::vector<float> rstd_;    // [chunk]
  std::vector<float> q_;       // [chunk, H*hd] after RoPE
  std::vector<float> att_;     // [chunk, H*hd]
  core::AlignedBuffer scores_;  // [H, chunk, cap] floats
  std::vector<float> g_, u_, hact_;  // [chunk, f]
  std::vector<float> y_;       // [chunk, d] FFN output
  std::vector<float> xe_, ye_;  // [chunk, d] hash-MoE rows of one expert
  std::vector<int32_t> by_expert_;  // [chunk] positions grouped by expert
  std::vector<int32_t> expert_count_;  // [E + 1]
  std::vector<float> logits_;  // [V]
};

}  // namespace stem::infer
