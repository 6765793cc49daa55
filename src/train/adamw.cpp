// AdamW over the tensor list (see adamw.h).
#include "train/adamw.h"

namespace stem::train {

AdamW::AdamW(const model::TensorList& weights, AdamWOptions opt) : opt_(opt) {
  auto trainable = [](const model::TensorSpec& s) { return s.trainable; };
  m_ = model::TensorList::allocate(weights.specs(), trainable);
  v_ = model::TensorList::allocate(weights.specs(), trainable);
}

void AdamW::step(model::TensorList& w, const model::Gradients& g, float lr) {
  ++step_;
  for (size_t i = 0; i < w.size(); ++i) {
    const model::TensorSpec& s = w.spec(i);
    if (!s.trainable) continue;
    kernels::AdamWHyper h;
    h.lr = lr;
    h.beta1 = opt_.beta1;
    h.beta2 = opt_.beta2;
    h.eps = opt_.eps;
    h.weight_decay = (s.decay || opt_.decay_all) ? opt_.weight_decay : 0.0f;
    h.step = step_;
    if (!g.rows[i].empty()) {
      kernels::adamw_update_rows(w[i].f32(), m_[i].f32(), v_[i].f32(), g.rows[i].f32(), g.index,
                                 s.shape[0], s.shape[1], h);
    } else {
      kernels::adamw_update(w[i].f32(), m_[i].f32(), v_[i].f32(), g.dense[i].f32(), w[i].numel(), h);
    }
  }
}

}  // namespace stem::train
