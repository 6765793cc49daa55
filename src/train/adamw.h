// AdamW over a model's tensor list: moments are TensorLists of the same specs,
// so one loop covers every trainable tensor. Dense tensors step through
// adamw_update; row-sparse tensors (STEM tables, untied embeddings) step
// through adamw_update_rows, which reads the gradient only for the step's rows
// and applies the exact zero-gradient update to all others (PyTorch's dense
// AdamW, without a dense gradient). Weight decay follows TensorSpec::decay
// unless `decay_all` is set (plain AdamW over every parameter, as in PyTorch).
#pragma once

#include "kernels/kernels.h"
#include "model/transformer.h"

namespace stem::train {

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  bool decay_all = false;  // decay norms too (PyTorch's default param group)
};

class AdamW {
 public:
  AdamW(const model::TensorList& weights, AdamWOptions opt);
  // One step at learning rate `lr` over every trainable tensor.
  void step(model::TensorList& weights, const model::Gradients& g, float lr);
  int64_t steps() const { return step_; }
  model::TensorList& m() { return m_; }
  model::TensorList& v() { return v_; }
  const AdamWOptions& options() const { return opt_; }

 private:
  AdamWOptions opt_;
  model::TensorList m_, v_;  // [same shapes], trainable tensors only
  int64_t step_ = 0;
};

}  // namespace stem::train
