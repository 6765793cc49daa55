// TableTier (see table_tier.h).
#include "train/table_tier.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/timer.h"

namespace stem::train {

Result<std::unique_ptr<TableTier>> TableTier::create(model::Transformer& tr, AdamW& adam,
                                                     const std::string& dir, int64_t max_ids,
                                                     bool prefetch) {
  std::unique_ptr<TableTier> t(new TableTier(tr, adam));
  const ModelConfig& cfg = tr.config();
  t->M_ = tr.n_stem_layers();
  t->f_ = cfg.intermediate_size;
  t->V_ = cfg.vocab_size;
  if (t->M_ == 0) return Status::error("tables: the model has no STEM layers to keep on disk");
  for (int l = 0; l < tr.n_layers(); ++l)
    if (tr.stem_slot(l) >= 0) t->tensor_.push_back(tr.layer(l).i_stem);
  for (int i : t->tensor_)
    STEM_CHECKF(adam.lazy(i), "TableTier: tensor %d does not step lazily (train with lazy tables)", i);
  STEM_ASSIGN_OR_RETURN(t->file_, memory::RowFile::create(dir, t->V_, 3 * t->M_, t->f_));
  STEM_RETURN_IF_ERROR(t->move_out());
  t->pf_ = std::make_unique<memory::Prefetcher>(*t->file_, std::max<int64_t>(1, max_ids), prefetch);
  return t;
}

TableTier::~TableTier() = default;

Result<const memory::StagedRows*> TableTier::wait_next() {
  core::Timer timer;
  auto r = pf_->wait(next_);
  stall_s_ += timer.seconds();
  return r;
}

float* TableTier::row(const memory::StagedRows& s, int kind, int j, int64_t u) const {
  return s.rows[static_cast<size_t>(kind * M_ + j)] + u * f_;
}

void TableTier::submit(const int32_t* tokens, int64_t n) {
  STEM_CHECKF(next_ < 0, "TableTier: a step is already staged ahead");
  next_ = pf_->submit(tokens, n);
  next_rows_ = nullptr;
}

Status TableTier::begin_step() {
  STEM_CHECKF(cur_ < 0 && next_ >= 0, "TableTier: begin_step without a submitted step");
  if (!next_rows_) {
    auto r = wait_next();
    if (!r.ok()) return r.status().with_context("train: fetching a step's table rows");
    next_rows_ = *r;
  }
  cur_ = next_;
  cur_rows_ = next_rows_;
  next_ = -1;
  next_rows_ = nullptr;
  use_ptrs_.assign(static_cast<size_t>(M_), nullptr);
  for (int j = 0; j < M_; ++j) use_ptrs_[j] = row(*cur_rows_, 0, j, 0);
  return ok_status();
}

void TableTier::given(const int32_t* tokens, int64_t n, const int32_t* slot_of, const float* const* rows) {
  if (!given_) given_ = std::make_shared<model::GivenRows>(M_);
  given_->set(tokens, n, slot_of, rows);
  tr_.set_row_provider(given_);
}

void TableTier::use(const int32_t* tokens, int64_t offset, int64_t n) {
  STEM_CHECK(cur_ >= 0 && offset >= 0 && offset + n <= static_cast<int64_t>(cur_rows_->slot_of.size()));
  given(tokens, n, cur_rows_->slot_of.data() + offset, use_ptrs_.data());
}

void TableTier::restage(const memory::StagedRows& dst, const memory::StagedRows& src) const {
  size_t a = 0, b = 0;
  while (a < dst.unique.size() && b < src.unique.size()) {
    if (dst.unique[a] < src.unique[b]) {
      ++a;
    } else if (src.unique[b] < dst.unique[a]) {
      ++b;
    } else {
      for (int k = 0; k < 3; ++k)
        for (int j = 0; j < M_; ++j)
          std::memcpy(row(dst, k, j, static_cast<int64_t>(a)), row(src, k, j, static_cast<int64_t>(b)),
                      sizeof(float) * f_);
      ++a;
      ++b;
    }
  }
}

Status TableTier::end_step(const model::Gradients& g, float lr) {
  STEM_CHECK(cur_ >= 0);
  const memory::StagedRows& s = *cur_rows_;
  const int64_t U = static_cast<int64_t>(s.unique.size());
  STEM_CHECKF(g.index.unique == s.unique, "TableTier: gradient rows (%lld) are not the step's rows (%lld)",
              static_cast<long long>(g.index.n_unique()), static_cast<long long>(U));
  for (int j = 0; j < M_; ++j) {
    const int i = tensor_[j];
    adam_.step_rows(static_cast<size_t>(i), row(s, 0, j, 0), row(s, 1, j, 0), row(s, 2, j, 0),
                    g.rows[i].f32(), s.unique.data(), U, lr);
  }
  std::vector<const float*> src(s.rows.begin(), s.rows.end());
  STEM_RETURN_IF_ERROR(file_->store(s.unique.data(), U, src.data()).with_context("train"));
  if (next_ >= 0) {  // its background read may predate this write: re-stage the rows both steps hold
    auto r = wait_next();
    if (!r.ok()) return r.status().with_context("train: fetching a step's table rows");
    next_rows_ = *r;
    restage(*next_rows_, s);
  }
  tr_.set_row_provider(nullptr);
  pf_->release(cur_);
  cur_ = -1;
  cur_rows_ = nullptr;
  return ok_status();
}

Status TableTier::use_for_eval(const int32_t* tokens, int64_t n) {
  STEM_CHECK(n >= 1);
  eval_ = kernels::build_row_index(tokens, n, V_);
  const int64_t U = eval_.n_unique();
  eval_rows_.resize(static_cast<size_t>(M_ * U * f_));
  std::vector<float*> dst(static_cast<size_t>(3 * M_), nullptr);  // tables only, no moments
  std::vector<const float*> rows(static_cast<size_t>(M_));
  for (int j = 0; j < M_; ++j) rows[j] = dst[j] = eval_rows_.data() + j * U * f_;
  STEM_RETURN_IF_ERROR(file_->fetch(eval_.unique.data(), U, dst.data()).with_context("train: validation rows"));
  given(tokens, n, eval_.slot.data(), rows.data());
  return ok_status();
}

Status TableTier::move_out() {
  model::TensorList& w = tr_.weights();
  std::vector<const float*> src(static_cast<size_t>(3 * M_));
  for (int j = 0; j < M_; ++j) {
    const int i = tensor_[j];
    src[j] = w[i].f32();
    src[M_ + j] = adam_.m()[i].f32();
    src[2 * M_ + j] = adam_.v()[i].f32();
  }
  STEM_RETURN_IF_ERROR(file_->write_range(0, V_, src.data()).with_context("train: moving the tables to disk"));
  for (int i : tensor_) {
    w[i] = Tensor();
    adam_.m()[i] = Tensor();
    adam_.v()[i] = Tensor();
  }
  tr_.rebind_stem_tables();
  return ok_status();
}

Status TableTier::stream(size_t i, int kind, const io::ByteSink& sink) {
  const auto it = std::find(tensor_.begin(), tensor_.end(), static_cast<int>(i));
  STEM_CHECKF(it != tensor_.end() && kind >= 0 && kind < 4, "TableTier: tensor %zu kind %d is not on disk", i, kind);
  STEM_CHECKF(cur_ < 0, "TableTier: stream inside a step");
  const int64_t t = (kind == 3 ? 0 : kind) * M_ + (it - tensor_.begin());
  constexpr int64_t kRows = 256;
  std::vector<float> buf(static_cast<size_t>(kRows * f_));
  for (int64_t r0 = 0; r0 < V_; r0 += kRows) {
    const int64_t n = std::min(kRows, V_ - r0);
    STEM_RETURN_IF_ERROR(file_->read_table(t, r0, n, buf.data()));
    if (kind == 0) adam_.apply_pending(i, r0, n, 0, buf.data());
    STEM_RETURN_IF_ERROR(sink(buf.data(), static_cast<size_t>(n * f_) * sizeof(float)));
  }
  return ok_status();
}

TableTierStats TableTier::stats() const {
  TableTierStats s;
  s.bytes_read = file_->bytes_read();
  s.bytes_written = file_->bytes_written();
  s.wait_seconds = stall_s_;
  s.fetch_seconds = pf_->fetch_seconds();
  s.file_bytes = file_->file_bytes();
  return s;
}

}  // namespace stem::train
