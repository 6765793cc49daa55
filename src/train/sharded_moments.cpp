// ShardedMoments (see sharded_moments.h).
#include "train/sharded_moments.h"

#include <algorithm>
#include <cstring>

#include "backends/backend.h"
#include "core/check.h"
#include "train/grad_norm.h"

namespace stem::train {

Result<std::unique_ptr<ShardedMoments>> ShardedMoments::create(model::TensorList& weights, model::Gradients& g,
                                                               AdamW& adam, dist::Comm& comm,
                                                               const std::vector<Range>& buckets,
                                                               const MomentSource& source) {
  std::unique_ptr<ShardedMoments> z(new ShardedMoments(weights, g, adam, comm));
  z->N_ = comm.size();
  z->me_ = comm.rank();
  z->buckets_ = buckets;
  int64_t total = 0;
  for (const Range& b : buckets) {
    z->bucket_at_.push_back(total);
    total += z->bucket_count(b.n, z->me_);
  }
  z->own_.assign(static_cast<size_t>(total), 0.0f);
  z->m_.resize(z->own_.size());
  z->v_.resize(z->own_.size());
  z->part_of_.assign(weights.size(), -1);
  auto backbone = [](const model::TensorSpec& s) { return s.trainable && s.kind != model::ParamKind::StemTable; };
  for (size_t i = 0; i < weights.size(); ++i) {
    const model::TensorSpec& s = weights.spec(i);
    if (!backbone(s)) continue;
    if (!adam.m()[i].empty() || weights[i].empty())
      return Status::error("train: --zero 1: tensor " + s.name + " is not a backbone tensor kept whole");
    Part p{i, 0, 0, 0, -1};
    if (!g.dense[i].empty()) {
      const float* t = g.dense[i].f32();
      const int64_t numel = g.dense[i].numel();
      for (size_t b = 0; b < buckets.size() && p.bucket < 0; ++b) {
        const Range& r = buckets[b];
        if (t < r.data || t + numel > r.data + r.n) continue;
        const int64_t t0 = t - r.data, off = z->bucket_first(r.n, z->me_), cnt = z->bucket_count(r.n, z->me_);
        const int64_t lo = std::max(t0, off), hi = std::min(t0 + numel, off + cnt);
        p.bucket = static_cast<int64_t>(b);
        if (hi <= lo) continue;
        p.e0 = lo - t0;
        p.n = hi - lo;
        p.at = z->bucket_at_[b] + (lo - off);
        for (int kind : {1, 2})
          STEM_RETURN_IF_ERROR(source(i, kind, p.e0, p.n, (kind == 1 ? z->m_ : z->v_).data() + p.at));
      }
      STEM_CHECKF(p.bucket >= 0, "ShardedMoments: the gradient of %s is in no bucket", s.name.c_str());
    } else if (!g.rows[i].empty()) {  // row-sparse: a range of rows
      const auto [r0, r1] = z->rows_of(i, z->me_);
      const int64_t C = s.shape[1];
      p.e0 = r0 * C;
      p.n = (r1 - r0) * C;
      p.at = static_cast<int64_t>(z->row_m_.size());
      z->row_m_.emplace_back(static_cast<size_t>(p.n), 0.0f);
      z->row_v_.emplace_back(static_cast<size_t>(p.n), 0.0f);
      STEM_RETURN_IF_ERROR(source(i, 1, p.e0, p.n, z->row_m_.back().data()));
      STEM_RETURN_IF_ERROR(source(i, 2, p.e0, p.n, z->row_v_.back().data()));
    } else {
      return Status::error("train: --zero 1: tensor " + s.name + " has no gradient");
    }
    z->part_of_[i] = static_cast<int>(z->parts_.size());
    z->parts_.push_back(p);
  }
  return z;
}

int64_t ShardedMoments::bucket_first(int64_t n, int r) const {
  if (r >= N_) return n;
  return std::min(n, (first(n, r) + kNormBlock / 2) / kNormBlock * kNormBlock);  // the nearest cut
}

std::pair<int64_t, int64_t> ShardedMoments::rows_of(size_t i, int r) const {
  const int64_t R = w_.spec(i).shape[0], r0 = first(R, r);
  return {r0, r0 + count(R, r)};
}

Status ShardedMoments::start(size_t b) {
  std::vector<int64_t> counts(N_);
  for (int r = 0; r < N_; ++r) counts[r] = bucket_count(buckets_[b].n, r);
  return comm_.start_reduce_scatter_sum(buckets_[b].data, own_.data() + bucket_at_[b], counts);
}

namespace {
// The summed gradient rows [u0, u1) of g.rows[i] whose ids lie in [r0, r1).
std::pair<int64_t, int64_t> grad_rows_in(const kernels::RowIndex& index, int64_t r0, int64_t r1) {
  const auto lo = std::lower_bound(index.unique.begin(), index.unique.end(), static_cast<int32_t>(r0));
  const auto hi = std::lower_bound(lo, index.unique.end(), static_cast<int32_t>(r1));
  return {lo - index.unique.begin(), hi - index.unique.begin()};
}
}  // namespace

Result<double> ShardedMoments::sum_squares() {
  // grad_norm.h's terms: the buckets' blocks, then each row-sparse tensor's
  // U rows; this rank's own, zeros elsewhere.
  const kernels::Ops& k = w_.backend().ops();
  const int64_t U = g_.index.n_unique();
  int64_t blocks = 0, row_tensors = 0;
  for (const Range& b : buckets_) blocks += norm_blocks(b.n);
  for (const Part& p : parts_) row_tensors += p.bucket < 0 ? 1 : 0;
  std::vector<double> terms(static_cast<size_t>(blocks + row_tensors * U), 0.0);
  int64_t at = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t n = buckets_[b].n;
    block_squares(k, own_.data() + bucket_at_[b], bucket_count(n, me_), terms.data() + at + bucket_first(n, me_) / kNormBlock);
    at += norm_blocks(n);
  }
  for (const Part& p : parts_) {
    if (p.bucket >= 0) continue;
    const int64_t C = w_.spec(p.i).shape[1];
    const auto [u0, u1] = grad_rows_in(g_.index, p.e0 / C, (p.e0 + p.n) / C);
    row_squares(k, g_.rows[p.i].f32() + u0 * C, u1 - u0, C, terms.data() + at + u0);
    at += U;
  }
  STEM_RETURN_IF_ERROR(comm_.all_reduce_sum(terms.data(), static_cast<int64_t>(terms.size()))
                           .with_context("train: the gradient norm"));
  return ordered_total(terms);
}

void ShardedMoments::scale(float factor) {
  const kernels::Ops& k = w_.backend().ops();
  if (!own_.empty()) k.scale_inplace(own_.data(), static_cast<int64_t>(own_.size()), factor);
  for (const Part& p : parts_) {
    if (p.bucket >= 0) continue;
    const int64_t C = w_.spec(p.i).shape[1];
    const auto [u0, u1] = grad_rows_in(g_.index, p.e0 / C, (p.e0 + p.n) / C);
    if (u1 > u0) k.scale_inplace(g_.rows[p.i].f32() + u0 * C, (u1 - u0) * C, factor);
  }
}

Status ShardedMoments::step(float lr) {
  // AdamW on the owned parts; the dense ones' new weights go into own_ (the
  // summed gradients are spent), ready to be sent.
  for (const Part& p : parts_) {
    float* w = w_[p.i].f32() + p.e0;
    if (p.bucket >= 0) {
      if (p.n == 0) continue;
      adam_.step_slice(p.i, w, m_.data() + p.at, v_.data() + p.at, own_.data() + p.at, p.n, lr);
      std::memcpy(own_.data() + p.at, w, sizeof(float) * p.n);
      continue;
    }
    const int64_t C = w_.spec(p.i).shape[1], r0 = p.e0 / C, R = p.n / C;
    const auto [u0, u1] = grad_rows_in(g_.index, r0, r0 + R);
    kernels::RowIndex rows;  // the gradient rows u0..u1 are rows id - r0 of this part
    for (int64_t u = u0; u < u1; ++u) rows.unique.push_back(g_.index.unique[u] - static_cast<int32_t>(r0));
    if (R > 0)
      adam_.step_shard(p.i, w, row_m_[p.at].data(), row_v_[p.at].data(), g_.rows[p.i].f32() + u0 * C, rows, R, lr);
  }
  // Every rank's slices of each bucket land in the gradient arena, then in
  // the weights of the bucket's tensors; the row-sparse tensors in place.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    std::vector<int64_t> counts(N_);
    for (int r = 0; r < N_; ++r) counts[r] = bucket_count(buckets_[b].n, r) * static_cast<int64_t>(sizeof(float));
    STEM_RETURN_IF_ERROR(comm_.all_gather_v(own_.data() + bucket_at_[b], counts[me_], buckets_[b].data, counts)
                             .with_context("train: gathering the updated weights"));
  }
  for (const Part& p : parts_) {
    if (p.bucket >= 0) {
      std::memcpy(w_[p.i].f32(), g_.dense[p.i].f32(), w_[p.i].nbytes());
      continue;
    }
    const int64_t C = w_.spec(p.i).shape[1];
    std::vector<int64_t> counts(N_);
    for (int r = 0; r < N_; ++r) {
      const auto [r0, r1] = rows_of(p.i, r);
      counts[r] = (r1 - r0) * C * static_cast<int64_t>(sizeof(float));
    }
    STEM_RETURN_IF_ERROR(comm_.all_gather_v(nullptr, counts[me_], w_[p.i].f32(), counts)
                             .with_context("train: gathering the updated weights"));
  }
  return ok_status();
}

Status ShardedMoments::gather(size_t i, int kind, const io::ByteSink* sink) {
  STEM_CHECKF(holds(i) && (kind == 1 || kind == 2), "ShardedMoments: tensor %zu kind %d is not sharded", i, kind);
  const Part& p = parts_[part_of_[i]];
  const float* mine = p.bucket >= 0 ? (kind == 1 ? m_ : v_).data() + p.at : (kind == 1 ? row_m_ : row_v_)[p.at].data();
  std::vector<int64_t> counts(N_);
  for (int r = 0; r < N_; ++r) {
    int64_t n = 0;
    if (p.bucket >= 0) {  // the part of rank r's slice of the bucket that is tensor i
      const Range& b = buckets_[p.bucket];
      const int64_t t0 = g_.dense[i].f32() - b.data, off = bucket_first(b.n, r);
      n = std::max<int64_t>(0, std::min(t0 + g_.dense[i].numel(), off + bucket_count(b.n, r)) - std::max(t0, off));
    } else {
      const auto [r0, r1] = rows_of(i, r);
      n = (r1 - r0) * w_.spec(i).shape[1];
    }
    counts[r] = n * static_cast<int64_t>(sizeof(float));
  }
  std::vector<float> whole(me_ == 0 ? static_cast<size_t>(w_[i].numel()) : 0);
  STEM_RETURN_IF_ERROR(comm_.gather_v(mine, counts[me_], whole.data(), counts, 0)
                           .with_context("checkpoint: gathering the moments of " + w_.spec(i).name));
  return me_ == 0 ? (*sink)(whole.data(), whole.size() * sizeof(float)) : ok_status();
}

int64_t ShardedMoments::moment_bytes() const {
  int64_t n = static_cast<int64_t>(m_.size() + v_.size());
  for (size_t k = 0; k < row_m_.size(); ++k) n += static_cast<int64_t>(row_m_[k].size() + row_v_[k].size());
  return n * static_cast<int64_t>(sizeof(float));
}

}  // namespace stem::train
