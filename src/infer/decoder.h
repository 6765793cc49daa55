// Decoder: the contract's forward for one sequence (batch 1) with a key/value
// cache, so that each new token costs one pass over the weights instead of a
// forward over the whole prefix. Same math as model::Transformer::forward
// (dense, STEM with the token's table row, hash-MoE through hash_table, RoPE at
// absolute positions, GQA): the logits of a position equal forward's logits at
// that position to float round-off, however the tokens were fed (one prefill,
// prefill in pieces, step by step).
//
// It does not sample (see sampler.h); it keeps the last position's logits, or
// hands every position's to a caller's buffer. With `slots` > 1 it holds that
// many sequences, each with its own cache and position, and forward_slots()
// feeds pieces of several of them in one pass (continuous batching): the
// weight matrices are read once for all their tokens, attention runs per
// sequence, and each sequence may read its own STEM row overrides. The
// single-sequence calls (prefill, step, rewind, ...) work on slot 0.
//
// Weights may be F32, BF16 or Q8 (matrices; accumulation in F32). STEM rows come
// through a model::RowProvider: the weight list's tables in place, or, from
// the Transformer's TableStore, the rows of
// each chunk's distinct tokens staged by a memory::Prefetcher, in the
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
// allocated in the constructor through the model's backend; prefill and step
// allocate nothing. Not thread-safe; kernels use all cores inside. Several
// Decoders may share one
// Transformer and decode at once from different threads (each reads the
// weights only; a shared TableStore serialises its fetches), as long as
// nothing changes the model meanwhile (tests/test_generate.cpp).
//
// Cache layout per slot and layer: k and v [capacity, Hkv, hd], row p holding
// position p; k stored after RoPE. Invariant: rows [0, slot_position(s)) of
// slot s are valid.
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

// A weight matrix [out, in] as stored (F32, BF16 or Q8).
struct WeightMat {
  const void* p = nullptr;
  DType dtype = DType::F32;
};

struct DecoderOptions {
  int64_t max_context = 0;      // <= 0: max_position_embeddings
  int64_t prefill_chunk = 256;  // positions a prefill pass takes at once (bounds the scratch)
  bool prefetch = true;         // stage table rows on a background thread
  int64_t slots = 1;            // sequences held at once, a cache each
};

// STEM rows that replace the tables' for one sequence (an edit chosen per
// request): the row [f] of STEM layer j (in layer order) for `token`, or null
// for the table's own. Must give the values the tables would hold after the
// edit (see stem::BatchGenerator), and stay valid while a pass reads it.
class RowOverrides {
 public:
  virtual ~RowOverrides() = default;
  virtual const float* find(int64_t j, int32_t token) const = 0;
};

// One sequence's piece of a batched pass: n >= 1 tokens appended to slot
// `slot` at slot_position(slot).
struct SlotChunk {
  int32_t slot = 0;
  const int32_t* ids = nullptr;  // [n]
  int64_t n = 0;
  float* logits = nullptr;       // [V] gets the last token's logits; null: not needed
  const RowOverrides* rows = nullptr;  // null: the tables' rows
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
  // The same, writing the logits of every one of the n positions to
  // `logits` [n, V] (scoring continuations); returns the last row of them.
  Result<const float*> prefill(const int32_t* ids, int64_t n, float* logits);
  // Appends one token; its logits [V].
  Result<const float*> step(int32_t id);
  // Several continuations of the sequence so far, scored in one pass: branch
  // b (lengths[b] >= 1 tokens, at most chunk() each) takes the positions
  // position() .. position()+lengths[b]-1 and attends to the sequence and to
  // itself only, as if fed alone after it. `ids` holds the branches one after
  // another; `logits` [sum of lengths, V] gets every position's logits, in
  // that order. position() does not move (the branches are not kept). The
  // branches need sum(lengths) free positions in the cache.
  Status prefill_branches(const int32_t* ids, const int64_t* lengths, int64_t n_branches, float* logits);
  int64_t chunk() const { return chunk_; }
  // Goes back to `position` <= position(): the cache keeps positions
  // [0, position) and what is fed next overwrites the rest (several
  // continuations of one shared context). Errors: a position out of range.
  Status rewind(int64_t position);

  // Several sequences at once: each chunk appended to its own slot (a slot at
  // most once a call), sum of n <= chunk(). Projections and the FFN run on all
  // the tokens together, attention per slot against its own cache; the STEM
  // rows of all the tokens are fetched together (distinct ids once). Errors
  // (a slot out of range or twice, too many tokens, an id outside [0, V), a
  // slot's context full, a table read error) leave every position as it was.
  Status forward_slots(const SlotChunk* chunks, int64_t n_chunks);
  int64_t slots() const { return static_cast<int64_t>(pos_.size()); }
  int64_t slot_position(int64_t slot) const { return pos_[slot]; }
  void reset_slot(int64_t slot) { pos_[slot] = 0; }

  int64_t position() const { return pos_[0]; }
  int64_t capacity() const { return cap_; }
  int64_t vocab_size() const { return V_; }
  // Cache and work buffers (staging included), for reporting.
  int64_t memory_bytes() const;
  // The prefetcher staging table rows (null when tables are in the weight list
  // or read in place).
  const memory::Prefetcher* prefetcher() const { return rows_->prefetcher(); }
  memory::Prefetcher* prefetcher() { return rows_->prefetcher(); }

 private:
  using Mat = WeightMat;
  struct LayerMats {
    Mat wq, wk, wv, wo, gate, up, down;
    std::vector<Mat> e_gate, e_up, e_down;
  };
  Mat mat(int i) const;
  // n <= chunk_, fits in the cache; `ticket` stages its table rows (-1: none).
  // `all` [n, V]: the logits of every position (null: the last one, into
  // logits_). With `branch_len`, the n tokens are n_branches branches (see
  // prefill_branches) and position() stays.
  // With `slots`, the n tokens are n_slots chunks of those sequences
  // (forward_slots) and `all` is unused.
  Status forward_chunk(const int32_t* ids, int64_t n, model::RowProvider::Ticket ticket, float* all,
                       const int64_t* branch_len = nullptr, int64_t n_branches = 0,
                       const SlotChunk* slots = nullptr, int64_t n_slots = 0);
  void slot_attention(float* att, int l, const SlotChunk* slots, int64_t n_slots);
  void override_rows(const int32_t* ids, int64_t j, const SlotChunk* slots, int64_t n_slots);
  float* k_cache(int l, int64_t slot) const;
  float* v_cache(int l, int64_t slot) const;
  void branch_attention(float* att, float* kc, float* vc, const int64_t* len, int64_t n_branches, int64_t pos0);
  void linear(float* y, const float* x, const Mat& W, int64_t n, int64_t in, int64_t out,
              bool accumulate = false);
  void swiglu_ffn(float* y, const float* x, const Mat& Wg, const Mat& Wu, const Mat& Wd, int64_t n);
  void hash_moe_ffn(float* y, const float* x, const model::LayerView& W, const LayerMats& M,
                    const int32_t* ids, int64_t n);

  const model::Transformer& m_;
  backends::Backend& be_;   // the model's
  const kernels::Ops& k_;   // be_.ops()
  std::vector<LayerMats> mats_;
  Mat embed_, head_;
  std::unique_ptr<model::RowProvider> rows_;  // STEM rows: in place, or staged by a prefetcher
  int64_t cap_ = 0, chunk_ = 0;
  std::vector<int64_t> pos_;  // [slots] each sequence's length
  int64_t V_ = 0, d_ = 0, f_ = 0, H_ = 0, Hkv_ = 0, hd_ = 0, E_ = 0;
  float eps_ = 0.0f;

  // Backend buffers; large ones are committed as they are first written, so a
  // long context costs memory only as far as it is used.
  std::shared_ptr<backends::Buffer> k_cache_, v_cache_;  // [slots, L, cap, Hkv*hd] floats each
  std::shared_ptr<backends::Buffer> work_;  // the work buffers below, chunk_ rows each
  float* h_ = nullptr;       // [chunk, d] residual stream
  float* a_ = nullptr;       // [chunk, d] normed input (attention, then FFN)
  float* rstd_ = nullptr;    // [chunk]
  float* q_ = nullptr;       // [chunk, H*hd] after RoPE
  float* att_ = nullptr;     // [chunk, H*hd]
  float* g_ = nullptr;       // [chunk, f]
  float* u_ = nullptr;       // [chunk, f]
  float* hact_ = nullptr;    // [chunk, f]
  float* y_ = nullptr;       // [chunk, d] FFN output
  float* xe_ = nullptr;      // [chunk, d] hash-MoE rows of one expert (null without hash-MoE)
  float* ye_ = nullptr;      // [chunk, d]
  float* logits_ = nullptr;  // [V]
  float* wide_ = nullptr;    // BF16 or Q8 weight panels widened for the prefill GEMM (null: none)
  float* scores_ = nullptr;  // [H, chunk, cap]
  float* kv_ = nullptr;        // [2, chunk, Hkv*hd] k, then v, of a batched pass
  float* head_in_ = nullptr;   // [slots, d] normed last rows of a batched pass
  float* head_out_ = nullptr;  // [slots, V] their logits
  std::vector<int32_t> batch_ids_;  // [chunk] the ids of a batched pass
  std::vector<kernels::CachedQuery> one_row_;  // [<= slots] one-row sequences of a batched pass
  // Routing is decided on the host.
  std::vector<int32_t> by_expert_;  // [chunk] positions grouped by expert
  std::vector<int32_t> expert_count_;  // [E + 1]
};

}  // namespace stem::infer
