// AdamW over a model's tensor list: moments are TensorLists of the same specs,
// so one loop covers every trainable tensor. Dense tensors step through
// adamw_update. Row-sparse tensors (STEM tables, untied embeddings) step either
//   - densely (default): adamw_update_rows reads the gradient only for the
//     step's rows and gives every other row the exact zero-gradient update, so
//     the result equals PyTorch's dense AdamW without a dense gradient; or
//   - lazily (`lazy_rows`, STEM tables only): only the step's rows move. A row
//     touched again after k skipped steps first gets those steps' moment decay
//     (b1^k, b2^k) and weight decay (the product of 1 - lr_s wd) exactly; what
//     it does not get is dense AdamW's momentum-only drift on skipped steps.
//     A checkpoint writes the rows with their pending decay applied on the way
//     out (apply_pending), leaving the state as it is: applying it in place
//     would round differently from the catch-up a later step does, so the run
//     would depend on where it was saved, and a stop at any step would not
//     resume exactly. flush() applies it in place, for callers that want that.
// Weight decay follows TensorSpec::decay unless `decay_all` is set.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "model/transformer.h"

namespace stem::train {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float weight_decay_tables = NAN;  // the STEM tables' (their parameter group); NaN: weight_decay
  bool decay_all = false;  // decay norms too (PyTorch's default param group)
  bool lazy_rows = false;  // lazy updates for STEM tables
  // False: the backbone's moments (every trainable tensor but the STEM
  // tables) are kept outside (a rank's ZeRO-1 slices, step_slice); step()
  // skips those tensors.
  bool backbone_moments = true;
};

class AdamW {
 public:
  AdamW(const model::TensorList& weights, AdamWOptions opt);
  // One step over every trainable tensor: the STEM tables at `lr_tables`,
  // everything else at `lr` (two parameter groups; a rate of 0 leaves a
  // tensor bit-identical, its moments still updated).
  void step(model::TensorList& weights, const model::Gradients& g, float lr, float lr_tables);
  void step(model::TensorList& weights, const model::Gradients& g, float lr) { step(weights, g, lr, lr); }
  // Lazy tables kept outside the weight list (the trainer's disk tier): step()
  // skips a lazy tensor whose weights are empty; after step(), the caller
  // updates that tensor's rows ids[0..U) itself, held in p/m/v [U, C] with
  // their gradients drows [U, C], exactly as step() would have in place
  // (`lr` is the tables' rate of that step).
  void step_rows(size_t i, float* p, float* m, float* v, const float* drows, const int32_t* ids,
                 int64_t U, float lr);
  // A row-sparse tensor stepped densely but kept outside the weight list (a
  // rank's shard of a STEM table, R rows [R, C] in p/m/v): after step(), the
  // dense AdamW step of those rows, with gradients drows for the rows
  // index.unique (rows of the shard) and zero for the rest, exactly as step()
  // would have in place.
  void step_shard(size_t i, float* p, float* m, float* v, const float* drows, const kernels::RowIndex& index,
                  int64_t R, float lr);
  // A dense tensor whose moments are kept outside (a rank's ZeRO-1 slice):
  // after step(), the AdamW step of its n elements p/m/v with gradient g.
  void step_slice(size_t i, float* p, float* m, float* v, const float* g, int64_t n, float lr);
  // Lazy tensor i, row r: the factors of weights, first and second moment that
  // bring it up to date with the steps it skipped (false if it is current),
  // and marks it current. flush() applies them to every row in memory; a
  // caller keeping rows elsewhere applies them itself.
  bool flush_row(size_t i, int64_t r, float* pd, float* md, float* vd);
  // The same factors without marking the row current (false if it is).
  bool pending(size_t i, int64_t r, float* pd, float* md, float* vd) const;
  // rows [n, C] holding rows r0 .. r0+n-1 of lazy tensor i's weights (kind 0),
  // first (1) or second (2) moment: multiplied by what each row owes, so they
  // read as if flushed. The optimizer's state does not change.
  void apply_pending(size_t i, int64_t r0, int64_t n, int kind, float* rows) const;
  // Lazy mode: brings every row up to date (no-op otherwise).
  void flush(model::TensorList& weights);

  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return opt_; }
  bool lazy(size_t i) const;  // tensor i steps lazily

  // State for checkpoints: moments, per-row last step (lazy tables), and the
  // cumulative weight-decay products per step.
  model::TensorList& m() { return m_; }
  model::TensorList& v() { return v_; }
  const model::TensorList& m() const { return m_; }
  const model::TensorList& v() const { return v_; }
  std::vector<Tensor>& last_step() { return last_; }   // [R] I32 for lazy tensors, else empty
  const std::vector<Tensor>& last_step() const { return last_; }
  std::vector<double>& decay_products() { return decay_prod_; }  // [steps + 1], [0] = 1
  const std::vector<double>& decay_products() const { return decay_prod_; }
  void set_steps(int64_t s) { step_ = s; }

 private:
  kernels::AdamWHyper hyper(const model::TensorSpec& s, float lr) const;
  float table_decay() const { return std::isnan(opt_.weight_decay_tables) ? opt_.weight_decay : opt_.weight_decay_tables; }
  // Lazy tensor i, rows ids[0..U) at the current step: catch-up factors for
  // the steps each row skipped; marks the rows current.
  void catch_up(size_t i, const int32_t* ids, int64_t U, float* pd, float* md, float* vd);
  AdamWOptions opt_;
  backends::Backend* be_;       // the weights'; moments live there too
  model::TensorList m_, v_;     // [same shapes], trainable tensors only
  std::vector<Tensor> last_;    // lazy tensors: [R] step at which each row last moved
  std::vector<double> decay_prod_{1.0};
  int64_t step_ = 0;
};

}  // namespace stem::train
