// Transformer: the contract's forward and backward over a batch of B sequences
// of T tokens, on the backend its weights were allocated by (the TensorList's:
// the host's unless told otherwise), whose ops do every piece of math and
// whose buffers hold the workspace. It owns the weights, a RoPE
// table and a workspace of saved activations sized for the largest B*T seen
// (activation memory grows with B*T only: attention keeps a log-sum-exp per
// row, never a [T, T] matrix). It does not validate input: the public Model
// and the trainer check token ids and lengths first (STEM_CHECK here).
// Not thread-safe; one forward/backward at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "kernels/kernels.h"
#include "memory/table_store.h"
#include "model/row_provider.h"
#include "model/weights.h"
#include "stem/config.h"

namespace stem::model {

// Pointers of one layer into the weight list.
struct LayerView {
  FfnType type = FfnType::Dense;
  const float* attn_norm = nullptr;     // [d]
  const float* wq = nullptr;            // [H*hd, d]
  const float* wk = nullptr;            // [Hkv*hd, d]
  const float* wv = nullptr;            // [Hkv*hd, d]
  const float* wo = nullptr;            // [d, H*hd]
  const float* ffn_norm = nullptr;      // [d]
  const float* w_gate = nullptr;        // [f, d]  dense and stem
  const float* w_up = nullptr;          // [f, d]  dense
  const float* w_down = nullptr;        // [d, f]  dense and stem
  const float* stem_table = nullptr;    // [V, f]  stem
  const int32_t* hash_table = nullptr;  // [V]     hash_moe
  std::vector<const float*> e_gate, e_up, e_down;  // E x expert weights
  // Indices into the tensor list, for gradients: same order as the fields.
  int i_attn_norm = -1, i_wq = -1, i_wk = -1, i_wv = -1, i_wo = -1, i_ffn_norm = -1;
  int i_gate = -1, i_up = -1, i_down = -1, i_stem = -1;
  std::vector<int> i_e_gate, i_e_up, i_e_down;
};

// Gradients of one step, index-aligned with the weight list. Dense tensors for
// ordinary parameters; for row-sparse ones (STEM tables, untied embeddings) a
// [U, cols] block holding the rows of the step's distinct tokens `index.unique`.
struct Gradients {
  TensorList dense;              // trainable, not row-sparse; empty elsewhere
  std::vector<Tensor> rows;      // row-sparse specs: [rows capacity, cols]; empty elsewhere
  kernels::RowIndex index;       // distinct input tokens of the step
  bool step_open = false;        // begin_step() fixed `index` for several micro-batches
  void zero();                   // dense and rows, before a step
  // Zeroes and fixes the step's rows to the distinct ids of all its tokens (every
  // micro-batch), so that backward() of each micro-batch adds into them.
  void begin_step(const int32_t* tokens, int64_t n, int64_t V);
  // The gradient of tensor i as a dense [shape] array (rows expanded).
  std::vector<float> dense_copy(size_t i) const;
};

class Transformer {
 public:
  Transformer(ModelConfig cfg, TensorList weights);
  ~Transformer();

  const ModelConfig& config() const { return cfg_; }
  backends::Backend& backend() const { return *be_; }
  TensorList& weights() { return w_; }
  const TensorList& weights() const { return w_; }
  const LayerView& layer(int i) const { return layers_[i]; }

  // Sees each layer's FFN input x [N, d] (the post-attention RMSNorm output)
  // during forward(), in layer order; for analyses (gemma.cpp's activations
  // observer). Null: none. It must not keep the pointer past the call.
  using LayerObserver = std::function<void(int layer, const float* x, int64_t N, int64_t d)>;
  void set_observer(LayerObserver obs) { observer_ = std::move(obs); }

  // Document masking: with it on, forward() splits each sequence into the
  // documents its tokens delimit (one starts at position 0, at every bos_id
  // and after every eos_id; kernels::doc_starts), attends only within a
  // document and restarts RoPE positions at 0 in each, so that every
  // position's logits are those of its document run alone; backward() follows.
  // The loss still counts all B*(T-1) positions. A negative id turns its rule
  // off; both negative (the default): plain causal attention over the window.
  void set_doc_mask(int32_t bos_id, int32_t eos_id);
  bool doc_mask() const { return doc_bos_ >= 0 || doc_eos_ >= 0; }

  // Runs the model on tokens [B, T] (ids in [0, V), T <= max positions), saving
  // activations for backward. Returns the mean next-token loss over B*(T-1)
  // positions (0 when T == 1). logits() is valid until backward().
  double forward(const int32_t* tokens, int64_t B, int64_t T);
  // Distillation: the next forward() and its backward() use the loss
  // (1-alpha) CE + alpha tau^2 KL(softmax(teacher/tau) || softmax(logits/tau))
  // per position, with teacher [B*T, V] another model's logits for the same
  // tokens, on this backend, valid through that backward(). One forward
  // only: the one after it is plain CE again unless this is called again.
  void set_teacher(const float* teacher_logits, float alpha, float tau);
  // The mean plain cross-entropy of the last forward (its return value
  // unless it was distilled).
  double last_ce() const { return last_ce_; }
  const float* logits() const;  // [B*T, V]
  const float* losses() const;  // [B*T] per-position loss of the last forward (0 at the last position)

  // For other forward paths (KV-cache decoding): the shared pieces.
  const float* embed_table() const { return w_[i_embed_].f32(); }  // [V, d]
  const float* final_norm() const { return w_[i_norm_].f32(); }    // [d]
  const float* head_weight() const { return w_[i_head_].f32(); }   // [V, d] (the embedding when tied)
  const float* rope_cos() const { return static_cast<const float*>(rope_->data()); }  // [max_pos, hd/2]
  const float* rope_sin() const { return rope_cos() + cfg_.max_position_embeddings * cfg_.head_dim() / 2; }
  int n_layers() const { return static_cast<int>(layers_.size()); }

  // Gradients sized for up to max_tokens tokens a step.
  Gradients make_gradients(int64_t max_tokens) const;
  // Backward of the last forward's mean loss times loss_scale (1/k when k
  // micro-batches are accumulated). Accumulates into g. Without begin_step, g's
  // rows become this batch's distinct tokens; after it, the batch's rows are
  // added into the step's. Overwrites logits().
  // `ready`, when given, is called as parts of g become final for this
  // backward: with grad_stage() of the tensors done, in the order L (the head
  // and final norm), L-1, ..., 0 (each layer's block), -1 (the embedding, and
  // nothing after it). The trainer starts summing a stage's gradients over
  // the ranks there, while the layers below it run.
  using GradsReady = std::function<void(int stage)>;
  void backward(Gradients& g, float loss_scale = 1.0f, const GradsReady& ready = nullptr);
  // The stage at which backward() finishes a tensor's gradient (see above).
  static int grad_stage(const TensorSpec& spec, int n_layers);

  // STEM rows reach forward() and backward() through one RowProvider
  // (row_provider.h): by default the weight list's tables read in place, or,
  // after set_table_store(), the store's rows staged for each forward's
  // distinct tokens; set_row_provider() puts another in front (the trainer's
  // disk tier hands in the rows it staged), null goes back to the default.
  // The store's tables are the STEM layers in layer order.
  void set_table_store(std::shared_ptr<memory::TableStore> store);
  memory::TableStore* table_store() const { return tables_.get(); }
  void set_row_provider(std::shared_ptr<RowProvider> rows);
  // Makes the rows of tokens[0..n) (the next forward's B*T ids) ready for
  // every STEM layer; they stay valid through that forward's backward().
  // forward() does this itself where it cannot fail (rows in place, or
  // given); with a table store (a read may fail) the caller does it first,
  // and forward() of other tokens is a bug.
  Status prepare_rows(const int32_t* tokens, int64_t n);
  // After the caller emptied or refilled the STEM tables of weights() (the
  // trainer moving them to disk and back): re-reads their addresses.
  void rebind_stem_tables();
  // Index of layer l among the STEM layers (its table in the store), else -1.
  int stem_slot(int l) const { return stem_slot_[l]; }
  int n_stem_layers() const { return n_stem_; }
  // Weight matrices all F32 (training and forward() need that; the decoder
  // also reads BF16).
  bool f32_weights() const { return f32_weights_; }

  // Mixed precision (Precision::BF16): every linear layer (q, k, v, o, the
  // FFN's gate, up and down, the head) and attention's products multiply
  // BF16 operands with F32 accumulation (ops gemm_bf16, attention_*_bf16):
  // each forward rounds the F32 weights to BF16 copies, the products' inputs
  // (and q, k, v) are saved in BF16 only, and backward rounds the output
  // gradients before their products. Norms, RoPE, the softmax, SwiGLU, the
  // STEM rows, the loss and every gradient sum stay F32, and gradients land
  // in the F32 Gradients as before (docs/precision.md). Hash-MoE layers are
  // F32 only: an error names the layer.
  // This runs on any backend with gemm_bf16, natively or not; whether it is
  // fast is the caller's question (Backend::supports(gemm_bf16, BF16)).
  Status set_precision(Precision p);
  Precision precision() const { return precision_; }

  int64_t workspace_bytes() const;
  const std::string& tokenizer_path() const { return tokenizer_path_; }
  void set_tokenizer_path(std::string p) { tokenizer_path_ = std::move(p); }

 private:
  struct LayerActs;
  void ensure_workspace(int64_t B, int64_t T);
  // Row source of layer l's STEM table for the last forward, and each position's row in it.
  const float* stem_rows(int l) const;
  const int32_t* stem_row_of() const { return view_.row_of; }
  RowProvider& row_provider() const { return given_rows_ ? *given_rows_ : *own_rows_; }
  void release_rows();
  float* alloc(int64_t n);
  uint16_t* alloc16(int64_t n) { return reinterpret_cast<uint16_t*>(alloc((n + 1) / 2)); }
  bool bf16() const { return precision_ == Precision::BF16; }
  // BF16 mode: rounds every matrix weight into its BF16 copy.
  void refresh_bf16_weights();
  // BF16 mode: y[N,out] (+)= x16[N,in] W16^T for weight i; dW[out,in] +=
  // dy16^T x16 and dx[N,in] (+)= dy16 W16 (dx or dW may be null).
  void linear16_forward(float* y, const uint16_t* x16, int i, int64_t N, int64_t in, int64_t out,
                        bool accumulate) const;
  void linear16_backward(float* dx, float* dW, const uint16_t* dy16, const uint16_t* x16, int i,
                         int64_t N, int64_t in, int64_t out, bool accumulate_dx) const;
  // BF16 mode: layer l's FFN, composed of linear16 products and the SwiGLU op
  // (the STEM rows and their gradients in F32).
  void ffn_forward_bf16(int l);
  void ffn_backward_bf16(int l, float* dx, float* dWg, float* dWu, float* dWd, float* drows,
                         const kernels::RowIndex& local);

  ModelConfig cfg_;
  TensorList w_;
  std::vector<LayerView> layers_;
  std::shared_ptr<backends::Buffer> rope_;  // [2, max_pos, hd/2]: cos, then sin
  int i_embed_ = -1, i_norm_ = -1, i_head_ = -1;

  backends::Backend* be_;  // the weights' backend
  // Workspace: one arena carved into the saved activations and backward scratch.
  std::shared_ptr<backends::Buffer> arena_;
  int64_t arena_used_ = 0;
  int64_t cap_tokens_ = 0, cap_T_ = 0;
  int64_t B_ = 0, T_ = 0;
  std::vector<int32_t> tokens_, targets_;
  int32_t doc_bos_ = -1, doc_eos_ = -1;      // set_doc_mask()
  std::vector<int32_t> doc_start_, doc_pos_;  // [B*T] of the last forward; empty: mask off
  struct Acts;
  std::unique_ptr<Acts> acts_;
  std::vector<kernels::RowIndex> routes_;  // per hash_moe layer, this step
  struct Teacher {
    const float* logits = nullptr;  // [B*T, V]
    float alpha = 0, tau = 1;
  };
  Teacher next_teacher_, teacher_;  // set for the next forward; the last forward's
  double last_ce_ = 0;
  bool have_forward_ = false;
  std::string tokenizer_path_;
  std::vector<int> stem_slot_;  // [L] index among STEM layers, -1 elsewhere
  int n_stem_ = 0;
  bool f32_weights_ = true;
  Precision precision_ = Precision::F32;
  std::shared_ptr<backends::Buffer> w16_buf_;  // BF16 copies of the matrix weights
  std::vector<uint16_t*> w16_;                  // [weights] the copy of tensor i, null if none
  std::shared_ptr<memory::TableStore> tables_;
  LayerObserver observer_;
  std::unique_ptr<RowProvider> own_rows_;    // in place over the weight list, or staged from tables_
  int64_t own_rows_cap_ = 0;                 // ids a staged own_rows_ holds (0: in place)
  std::shared_ptr<RowProvider> given_rows_;  // set_row_provider(); used instead while set
  RowProvider* prepared_by_ = nullptr;       // the provider of view_
  RowProvider::Ticket ticket_ = -1;          // its ticket, released at the next prepare
  StemRows view_;                            // rows of the prepared ids
  std::vector<int32_t> prepared_;            // [B*T] the ids view_ is for
};

}  // namespace stem::model
