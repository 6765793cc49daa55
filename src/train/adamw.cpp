// AdamW over the tensor list (see adamw.h).
#include "train/adamw.h"

#include <cmath>

#include "core/check.h"

namespace stem::train {

AdamW::AdamW(const model::TensorList& weights, AdamWOptions opt) : opt_(opt), be_(&weights.backend()) {
  // STEM tables' moments get storage of their own, outside the arena, so a
  // caller that moves them elsewhere (the trainer's disk tier, or a rank that
  // keeps only its shard) frees it.
  auto in_arena = [&opt](const model::TensorSpec& s) {
    return opt.backbone_moments && s.trainable && s.kind != model::ParamKind::StemTable;
  };
  m_ = model::TensorList::allocate(weights.specs(), in_arena, *be_);
  v_ = model::TensorList::allocate(weights.specs(), in_arena, *be_);
  last_.resize(weights.size());
  auto own = [&](const Shape& shape) {
    auto buf = backends::must_alloc(*be_, static_cast<size_t>(shape_numel(shape)) * sizeof(float));
    return Tensor::view(DType::F32, shape, buf->data(), buf, be_->device());
  };
  for (size_t i = 0; i < weights.size(); ++i) {
    const model::TensorSpec& s = weights.spec(i);
    if (!s.trainable || s.kind != model::ParamKind::StemTable) continue;
    if (lazy(i)) last_[i] = Tensor::zeros(DType::I32, {s.shape[0]});  // host bookkeeping
    if (weights[i].empty()) continue;  // a table kept elsewhere from the start (a rank's shard): so are its moments
    m_[i] = own(s.shape);
    v_[i] = own(s.shape);
  }
}

bool AdamW::lazy(size_t i) const {
  return opt_.lazy_rows && m_.spec(i).trainable && m_.spec(i).kind == model::ParamKind::StemTable;
}

kernels::AdamWHyper AdamW::hyper(const model::TensorSpec& s, float lr) const {
  kernels::AdamWHyper h;
  h.lr = lr;
  h.beta1 = opt_.beta1;
  h.beta2 = opt_.beta2;
  h.eps = opt_.eps;
  const float wd = s.kind == model::ParamKind::StemTable ? table_decay() : opt_.weight_decay;
  h.weight_decay = (s.decay || opt_.decay_all) ? wd : 0.0f;
  h.step = step_;
  return h;
}

void AdamW::step(model::TensorList& w, const model::Gradients& g, float lr, float lr_tables) {
  const kernels::Ops& k = be_->ops();
  ++step_;
  for (size_t i = 0; i < w.size(); ++i) {
    const model::TensorSpec& s = w.spec(i);
    if (!s.trainable || w[i].empty() || m_[i].empty()) continue;  // kept outside (step_rows, step_shard, step_slice)
    const kernels::AdamWHyper h = hyper(s, s.kind == model::ParamKind::StemTable ? lr_tables : lr);
    if (lazy(i)) {
      const int64_t U = g.index.n_unique();
      std::vector<float> pd(U), md(U), vd(U);
      catch_up(i, g.index.unique.data(), U, pd.data(), md.data(), vd.data());
      k.adamw_update_rows_lazy(w[i].f32(), m_[i].f32(), v_[i].f32(), g.rows[i].f32(), g.index,
                                      s.shape[1], pd.data(), md.data(), vd.data(), h);
    } else if (!g.rows[i].empty()) {
      k.adamw_update_rows(w[i].f32(), m_[i].f32(), v_[i].f32(), g.rows[i].f32(), g.index,
                                 s.shape[0], s.shape[1], h);
    } else {
      k.adamw_update(w[i].f32(), m_[i].f32(), v_[i].f32(), g.dense[i].f32(), w[i].numel(), h);
    }
  }
  // Lazy tables decay at the rate of their own tensor: every lazy tensor is a
  // STEM table (decayed), so one product serves them all.
  const float wd = table_decay();
  decay_prod_.push_back(decay_prod_.back() * (1.0 - static_cast<double>(lr_tables) * static_cast<double>(wd)));
}

void AdamW::catch_up(size_t i, const int32_t* ids, int64_t U, float* pd, float* md, float* vd) {
  // Skipped steps last+1 .. step-1 (step_ is the step being taken).
  int32_t* last = last_[i].i32();
  for (int64_t u = 0; u < U; ++u) {
    const int32_t r = ids[u];
    const int64_t k = step_ - 1 - last[r];
    pd[u] = static_cast<float>(decay_prod_[step_ - 1] / decay_prod_[last[r]]);
    md[u] = static_cast<float>(std::pow(static_cast<double>(opt_.beta1), static_cast<double>(k)));
    vd[u] = static_cast<float>(std::pow(static_cast<double>(opt_.beta2), static_cast<double>(k)));
    last[r] = static_cast<int32_t>(step_);
  }
}

void AdamW::step_rows(size_t i, float* p, float* m, float* v, const float* drows, const int32_t* ids,
                      int64_t U, float lr) {
  STEM_CHECKF(lazy(i) && step_ >= 1, "AdamW::step_rows: tensor %zu is not a lazy table, or no step() yet", i);
  std::vector<float> pd(U), md(U), vd(U);
  catch_up(i, ids, U, pd.data(), md.data(), vd.data());
  kernels::RowIndex here;  // the rows are p/m/v's own rows 0..U-1
  here.unique.resize(U);
  for (int64_t u = 0; u < U; ++u) here.unique[u] = static_cast<int32_t>(u);
  be_->ops().adamw_update_rows_lazy(p, m, v, drows, here, m_.spec(i).shape[1], pd.data(), md.data(),
                                  vd.data(), hyper(m_.spec(i), lr));
}

void AdamW::step_shard(size_t i, float* p, float* m, float* v, const float* drows, const kernels::RowIndex& index,
                       int64_t R, float lr) {
  STEM_CHECKF(!lazy(i) && step_ >= 1, "AdamW::step_shard: tensor %zu is a lazy table, or no step() yet", i);
  be_->ops().adamw_update_rows(p, m, v, drows, index, R, m_.spec(i).shape[1], hyper(m_.spec(i), lr));
}

void AdamW::step_slice(size_t i, float* p, float* m, float* v, const float* g, int64_t n, float lr) {
  STEM_CHECKF(!lazy(i) && step_ >= 1, "AdamW::step_slice: tensor %zu is a lazy table, or no step() yet", i);
  be_->ops().adamw_update(p, m, v, g, n, hyper(m_.spec(i), lr));
}

bool AdamW::pending(size_t i, int64_t r, float* pd, float* md, float* vd) const {
  const int32_t last = last_[i].i32()[r];
  const int64_t k = step_ - last;  // steps 1..step_ already ran; rows at last[r] are current to it
  if (k <= 0) return false;
  *pd = static_cast<float>(decay_prod_[step_] / decay_prod_[last]);
  *md = static_cast<float>(std::pow(static_cast<double>(opt_.beta1), static_cast<double>(k)));
  *vd = static_cast<float>(std::pow(static_cast<double>(opt_.beta2), static_cast<double>(k)));
  return true;
}

bool AdamW::flush_row(size_t i, int64_t r, float* pd, float* md, float* vd) {
  if (!pending(i, r, pd, md, vd)) return false;
  last_[i].i32()[r] = static_cast<int32_t>(step_);
  return true;
}

void AdamW::apply_pending(size_t i, int64_t r0, int64_t n, int kind, float* rows) const {
  STEM_CHECKF(lazy(i) && kind >= 0 && kind < 3, "AdamW::apply_pending: tensor %zu kind %d", i, kind);
  std::vector<float> factor(static_cast<size_t>(n), 1.0f);
  for (int64_t k = 0; k < n; ++k) {
    float f[3];
    if (pending(i, r0 + k, &f[0], &f[1], &f[2])) factor[k] = f[kind];
  }
  // rows is a host buffer (a chunk on its way to a file).
  backends::cpu().ops().scale_rows(rows, factor.data(), n, m_.spec(i).shape[1]);
}

void AdamW::flush(model::TensorList& w) {
  for (size_t i = 0; i < w.size(); ++i) {
    if (!lazy(i) || w[i].empty()) continue;
    const int64_t R = w.spec(i).shape[0], C = w.spec(i).shape[1];
    std::vector<float> pd(R, 1.0f), md(R, 1.0f), vd(R, 1.0f);
    for (int64_t r = 0; r < R; ++r) flush_row(i, r, &pd[r], &md[r], &vd[r]);
    const kernels::Ops& k = be_->ops();
    k.scale_rows(w[i].f32(), pd.data(), R, C);
    k.scale_rows(m_[i].f32(), md.data(), R, C);
    k.scale_rows(v_[i].f32(), vd.data(), R, C);
  }
}

}  // namespace stem::train
