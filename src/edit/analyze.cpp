// Spread and capacity analyses (see analyze.h).
#include "edit/analyze.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <unordered_set>

#include "core/check.h"
#include "kernels/kernels.h"

namespace stem::edit {

CosineStats cosine_stats(const float* vectors, int64_t n, int64_t dim, int64_t max_pairs, uint64_t seed, int bins) {
  CosineStats s;
  s.histogram.assign(static_cast<size_t>(std::max(1, bins)), 0);
  // Unit vectors of the non-zero rows, in double.
  std::vector<double> unit;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = vectors + i * dim;
    double ss = 0;
    for (int64_t c = 0; c < dim; ++c) ss += static_cast<double>(v[c]) * v[c];
    if (!(ss > 0) || !std::isfinite(ss)) continue;
    const double inv = 1.0 / std::sqrt(ss);
    for (int64_t c = 0; c < dim; ++c) unit.push_back(v[c] * inv);
  }
  const int64_t m = static_cast<int64_t>(unit.size()) / std::max<int64_t>(dim, 1);
  s.vectors = m;
  if (m < 2) return s;
  const double all_pairs = 0.5 * static_cast<double>(m) * static_cast<double>(m - 1);
  s.sampled = all_pairs > static_cast<double>(max_pairs);
  std::vector<double> abs_cos;
  double sum = 0, sum_abs = 0;
  auto take = [&](int64_t i, int64_t j) {
    const double* a = unit.data() + i * dim;
    const double* b = unit.data() + j * dim;
    double c = 0;
    for (int64_t k = 0; k < dim; ++k) c += a[k] * b[k];
    c = std::clamp(c, -1.0, 1.0);
    sum += c;
    sum_abs += std::abs(c);
    abs_cos.push_back(std::abs(c));
    const int nb = static_cast<int>(s.histogram.size());
    s.histogram[std::min(nb - 1, static_cast<int>((c + 1.0) * 0.5 * nb))]++;
  };
  if (!s.sampled) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = i + 1; j < m; ++j) take(i, j);
  } else {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int64_t> pick(0, m - 1);
    for (int64_t p = 0; p < max_pairs; ++p) {
      const int64_t i = pick(rng);
      int64_t j = pick(rng);
      while (j == i) j = pick(rng);
      take(i, j);
    }
  }
  s.pairs = static_cast<int64_t>(abs_cos.size());
  s.mean_cos = sum / static_cast<double>(s.pairs);
  s.mean_abs_cos = sum_abs / static_cast<double>(s.pairs);
  const size_t k = std::min(abs_cos.size() - 1, static_cast<size_t>(std::ceil(0.95 * static_cast<double>(abs_cos.size()))) - 1);
  std::nth_element(abs_cos.begin(), abs_cos.begin() + static_cast<std::ptrdiff_t>(k), abs_cos.end());
  s.p95_abs_cos = abs_cos[k];
  return s;
}

std::map<int, std::vector<float>> dense_up_outputs(model::Transformer& m, const std::vector<int32_t>& ids,
                                                   int64_t window, int64_t max_positions) {
  const ModelConfig& cfg = m.config();
  const int64_t f = cfg.intermediate_size;
  std::map<int, std::vector<float>> out;
  bool any = false;
  for (int l = 0; l < m.n_layers(); ++l) any = any || m.layer(l).type == FfnType::Dense;
  if (!any || ids.empty()) return out;
  window = std::clamp<int64_t>(window, 1, cfg.max_position_embeddings);
  const int64_t n_total = std::min<int64_t>(max_positions, static_cast<int64_t>(ids.size()));
  std::vector<float> u;
  for (int64_t off = 0; off < n_total; off += window) {
    const int64_t T = std::min(window, static_cast<int64_t>(ids.size()) - off);
    const int64_t keep = std::min(T, n_total - off);
    m.set_observer([&](int l, const float* x, int64_t N, int64_t d) {
      const model::LayerView& W = m.layer(l);
      if (W.type != FfnType::Dense) return;
      u.resize(static_cast<size_t>(N * f));
      m.backend().ops().linear_forward(u.data(), x, W.w_up, N, d, f, false);
      auto& dst = out[l];
      dst.insert(dst.end(), u.begin(), u.begin() + keep * f);
    });
    if (Status st = m.prepare_rows(ids.data() + off, T); !st.ok()) {
      m.set_observer(nullptr);
      return {};
    }
    m.forward(ids.data() + off, 1, T);
    m.set_observer(nullptr);
  }
  return out;
}

Result<std::vector<CapacityPoint>> capacity_curve(const ModelConfig& cfg, const std::vector<int32_t>& ids,
                                                  int64_t max_context, int64_t windows) {
  const int64_t S = cfg.n_stem_layers(), f = cfg.intermediate_size;
  if (S == 0) return Status::error("capacity: the model has no STEM layers");
  if (ids.empty()) return Status::error("capacity: no tokens");
  if (windows < 1) return Status::error("capacity: --windows must be >= 1");
  const int64_t top = std::min<int64_t>(max_context > 0 ? max_context : static_cast<int64_t>(ids.size()),
                                        static_cast<int64_t>(ids.size()));
  std::vector<int64_t> contexts;
  for (int64_t c = 1; c <= top; c *= 2) contexts.push_back(c);
  if (contexts.back() != top) contexts.push_back(top);
  // Windows of length `top`, evenly spread (overlapping when the data is short).
  const int64_t span = static_cast<int64_t>(ids.size()) - top;
  const int64_t nw = span == 0 ? 1 : windows;
  std::vector<CapacityPoint> out;
  for (int64_t c : contexts) {
    double sum = 0;
    for (int64_t w = 0; w < nw; ++w) {
      const int64_t start = nw == 1 ? 0 : span * w / (nw - 1);
      std::unordered_set<int32_t> seen(ids.begin() + start, ids.begin() + start + c);
      sum += static_cast<double>(seen.size());
    }
    CapacityPoint p;
    p.context = c;
    p.distinct_tokens = sum / static_cast<double>(nw);
    p.stem_params = p.distinct_tokens * static_cast<double>(f * S);
    p.table_fraction = p.distinct_tokens / static_cast<double>(cfg.vocab_size);
    out.push_back(p);
  }
  return out;
}

}  // namespace stem::edit
