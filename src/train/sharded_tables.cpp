// ShardedTables (see sharded_tables.h).
#include "train/sharded_tables.h"

#include <algorithm>
#include <iterator>
#include <cstring>

#include "backends/backend.h"
#include "core/check.h"

namespace stem::train {
namespace {

constexpr int64_t kBlockRows = 256;  // rows a checkpoint gather moves at a time

std::vector<int32_t> distinct(std::span<const int32_t> ids) {
  std::vector<int32_t> u(ids.begin(), ids.end());
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  return u;
}

}  // namespace

Result<std::unique_ptr<ShardedTables>> ShardedTables::create(model::Transformer& tr, AdamW& adam, dist::Comm& comm,
                                                             const RowSource& source, const std::string& disk_dir) {
  std::unique_ptr<ShardedTables> t(new ShardedTables(tr, adam, comm));
  const ModelConfig& cfg = tr.config();
  t->N_ = comm.size();
  t->me_ = comm.rank();
  t->M_ = tr.n_stem_layers();
  t->f_ = cfg.intermediate_size;
  t->V_ = cfg.vocab_size;
  t->R_ = (t->V_ - t->me_ + t->N_ - 1) / t->N_;
  for (int l = 0; l < tr.n_layers(); ++l)
    if (tr.stem_slot(l) >= 0) t->tensor_.push_back(tr.layer(l).i_stem);
  const model::TensorList& w = tr.weights();
  const int64_t f = t->f_, N = t->N_, M = t->M_;
  if (disk_dir.empty()) {
    t->ram_.assign(static_cast<size_t>(3 * M), std::vector<float>(static_cast<size_t>(t->R_ * f), 0.0f));
  } else {
    for (int i : t->tensor_)
      if (!adam.lazy(static_cast<size_t>(i)))
        return Status::error("train: --tables disk needs --lazy-tables (only the rows of a step come off disk)");
    STEM_ASSIGN_OR_RETURN(t->file_, memory::RowFile::create(disk_dir, std::max<int64_t>(1, t->R_), 3 * M, f));
  }
  std::vector<float> owned;
  for (int64_t j = 0; j < M; ++j) {
    const int i = t->tensor_[j];
    STEM_CHECKF(w[i].empty() && adam.m()[i].empty(), "ShardedTables: %s is whole in this process",
                w.spec(i).name.c_str());
    for (int kind = 0; kind < 3; ++kind) {
      Status put;
      STEM_RETURN_IF_ERROR(source(static_cast<size_t>(i), kind, [&](int64_t r0, int64_t n, const float* block) {
        // This rank's rows of the block: local rows [k0, k0 + count), every N-th row from the first owned.
        const int64_t first = t->first_owned(r0), k0 = first / N;
        int64_t count = 0;
        owned.clear();
        for (int64_t r = first; r < r0 + n; r += N, ++count) owned.insert(owned.end(), block + (r - r0) * f, block + (r - r0 + 1) * f);
        if (count > 0 && put.ok()) put = t->write_rows(static_cast<int>(kind * M + j), k0, count, owned.data());
      }));
      STEM_RETURN_IF_ERROR(put);
    }
  }
  tr.rebind_stem_tables();
  return t;
}

Status ShardedTables::write_rows(int t, int64_t k0, int64_t n, const float* src) {
  if (file_) return file_->write_table(t, k0, n, src);
  std::memcpy(ram_[t].data() + k0 * f_, src, sizeof(float) * n * f_);
  return ok_status();
}

Status ShardedTables::read_rows(int t, int64_t k0, int64_t n, float* dst) {
  if (file_) return file_->read_table(t, k0, n, dst);
  std::memcpy(dst, ram_[t].data() + k0 * f_, sizeof(float) * n * f_);
  return ok_status();
}

Status ShardedTables::fetch_rows(const std::vector<int32_t>& local, int tables, std::vector<float>* out) {
  const int64_t n = static_cast<int64_t>(local.size());
  out->resize(static_cast<size_t>(tables * n * f_));
  std::vector<float*> dst(static_cast<size_t>(3 * M_), nullptr);
  for (int t = 0; t < tables; ++t) dst[t] = out->data() + t * n * f_;
  if (file_) return file_->fetch(local.data(), n, dst.data());
  for (int t = 0; t < tables; ++t)
    for (int64_t k = 0; k < n; ++k) std::memcpy(dst[t] + k * f_, ram_[t].data() + local[k] * f_, sizeof(float) * f_);
  return ok_status();
}

Status ShardedTables::store_rows(const std::vector<int32_t>& local, const std::vector<float>& rows) {
  const int64_t n = static_cast<int64_t>(local.size());
  std::vector<const float*> src(static_cast<size_t>(3 * M_));
  for (int64_t t = 0; t < 3 * M_; ++t) src[t] = rows.data() + t * n * f_;
  if (file_) return file_->store(local.data(), n, src.data());
  for (int64_t t = 0; t < 3 * M_; ++t)
    for (int64_t k = 0; k < n; ++k) std::memcpy(ram_[t].data() + local[k] * f_, src[t] + k * f_, sizeof(float) * f_);
  return ok_status();
}

Status ShardedTables::pack(const std::vector<std::vector<int32_t>>& ids_of, Exchange* x) {
  const int64_t row = M_ * f_, row_bytes = row * static_cast<int64_t>(sizeof(float));
  x->send_counts.assign(N_, 0);
  x->recv_counts.assign(N_, 0);
  std::vector<int32_t> local;  // the owned rows to send, rank by rank
  for (int s = 0; s < N_; ++s)
    for (int32_t id : ids_of[s]) {
      if (owner(id) != me_) continue;
      x->send_counts[s] += row_bytes;
      local.push_back(id / N_);
    }
  std::vector<float> p;  // [M, n, f]
  STEM_RETURN_IF_ERROR(fetch_rows(local, static_cast<int>(M_), &p).with_context("train: table rows"));
  const int64_t n = static_cast<int64_t>(local.size());
  x->send.resize(static_cast<size_t>(n * row));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < M_; ++j)
      std::memcpy(x->send.data() + k * row + j * f_, p.data() + (j * n + k) * f_, sizeof(float) * f_);
  for (int32_t id : ids_of[me_]) x->recv_counts[owner(id)] += row_bytes;
  x->recv.resize(ids_of[me_].size() * static_cast<size_t>(row));
  return ok_status();
}

void ShardedTables::place(const std::vector<int32_t>& ids, const Exchange& x) {
  const int64_t row = M_ * f_, U = mine_.n_unique();
  std::vector<int64_t> at(N_, 0);  // owner o's rows arrive together, in id order
  for (int o = 1; o < N_; ++o) at[o] = at[o - 1] + x.recv_counts[o - 1] / static_cast<int64_t>(sizeof(float));
  for (int32_t id : ids) {
    const int64_t u = std::lower_bound(mine_.unique.begin(), mine_.unique.end(), id) - mine_.unique.begin();
    const int o = owner(id);
    for (int64_t j = 0; j < M_; ++j)
      std::memcpy(rows_.data() + (j * U + u) * f_, x.recv.data() + at[o] + j * f_, sizeof(float) * f_);
    at[o] += row;
  }
}

Status ShardedTables::fetch(const std::vector<std::span<const int32_t>>& tokens_of) {
  STEM_CHECK(static_cast<int>(tokens_of.size()) == N_);
  const std::span<const int32_t> mine = tokens_of[me_];
  mine_ = mine.empty() ? kernels::RowIndex{} : kernels::build_row_index(mine.data(), static_cast<int64_t>(mine.size()), V_);
  ids_of_.assign(N_, {});
  for (int s = 0; s < N_; ++s) ids_of_[s] = s == me_ ? mine_.unique : distinct(tokens_of[s]);
  bool early = pf_.started;
  for (int s = 0; s < N_ && early; ++s)
    early = std::equal(tokens_of[s].begin(), tokens_of[s].end(), pf_.tokens[s].begin(), pf_.tokens[s].end());
  // The rows still to come: those not prefetched.
  std::vector<std::vector<int32_t>> late = ids_of_;
  if (early)
    for (int s = 0; s < N_; ++s) {
      late[s].clear();
      std::set_difference(ids_of_[s].begin(), ids_of_[s].end(), pf_.early[s].begin(), pf_.early[s].end(),
                          std::back_inserter(late[s]));
    }
  Exchange x;
  STEM_RETURN_IF_ERROR(pack(late, &x));
  STEM_RETURN_IF_ERROR(comm_.all_to_all_v(x.send.data(), x.send_counts, x.recv.data(), x.recv_counts)
                           .with_context("train: fetching table rows"));
  for (int s = 0; s < N_; ++s)
    if (s != me_) traffic_.fetch_bytes += x.send_counts[s];
  rows_.resize(static_cast<size_t>(M_ * mine_.n_unique() * f_));
  place(late[me_], x);
  if (early) {
    STEM_RETURN_IF_ERROR(comm_.wait_all().with_context("train: prefetching table rows"));
    place(pf_.early[me_], pf_.x);
    pf_ = Prefetch{};
  }
  use_ptrs_.assign(static_cast<size_t>(M_), nullptr);
  for (int64_t j = 0; j < M_; ++j) use_ptrs_[j] = rows_.data() + j * mine_.n_unique() * f_;
  return ok_status();
}

Status ShardedTables::prefetch(const std::vector<std::span<const int32_t>>& next_of) {
  STEM_CHECK(static_cast<int>(next_of.size()) == N_ && !pf_.started);
  for (int i : tensor_) STEM_CHECKF(adam_.lazy(static_cast<size_t>(i)), "ShardedTables::prefetch: dense AdamW moves every row");
  std::vector<int32_t> now;  // every id this step touches
  for (const auto& ids : ids_of_) now.insert(now.end(), ids.begin(), ids.end());
  now = distinct(now);
  pf_.tokens.assign(N_, {});
  pf_.early.assign(N_, {});
  for (int s = 0; s < N_; ++s) {
    pf_.tokens[s].assign(next_of[s].begin(), next_of[s].end());
    const std::vector<int32_t> next = distinct(next_of[s]);
    std::set_difference(next.begin(), next.end(), now.begin(), now.end(), std::back_inserter(pf_.early[s]));
  }
  STEM_RETURN_IF_ERROR(pack(pf_.early, &pf_.x));
  STEM_RETURN_IF_ERROR(comm_.start_all_to_all_v(pf_.x.send.data(), pf_.x.send_counts, pf_.x.recv.data(),
                                                pf_.x.recv_counts)
                           .with_context("train: prefetching table rows"));
  for (int s = 0; s < N_; ++s)
    if (s != me_) {
      traffic_.fetch_bytes += pf_.x.send_counts[s];
      traffic_.prefetch_bytes += pf_.x.send_counts[s];
    }
  pf_.started = true;
  return ok_status();
}

void ShardedTables::use(const int32_t* tokens, int64_t offset, int64_t n) {
  STEM_CHECK(offset >= 0 && offset + n <= static_cast<int64_t>(mine_.slot.size()));
  if (!given_) given_ = std::make_shared<model::GivenRows>(M_);
  given_->set(tokens, n, mine_.slot.data() + offset, use_ptrs_.data());
  tr_.set_row_provider(given_);
}

void ShardedTables::release() { tr_.set_row_provider(nullptr); }

Status ShardedTables::start_reduce(int j, const model::Gradients& g) {
  STEM_CHECK(j >= 0 && j < M_);
  if (grads_.size() != static_cast<size_t>(M_)) grads_.assign(static_cast<size_t>(M_), Exchange{});
  Exchange& x = grads_[j];
  STEM_CHECK(x.send_counts.empty());  // once a step
  const int64_t row_bytes = f_ * static_cast<int64_t>(sizeof(float));
  const std::vector<int32_t>& mine = ids_of_[me_];
  x.send_counts.assign(N_, 0);
  x.recv_counts.assign(N_, 0);
  for (int32_t id : mine) x.send_counts[owner(id)] += row_bytes;
  for (int s = 0; s < N_; ++s)
    for (int32_t id : ids_of_[s]) x.recv_counts[s] += owner(id) == me_ ? row_bytes : 0;
  // This rank's gradient rows of layer j grouped by owner, in id order within each.
  x.send.resize(mine.size() * static_cast<size_t>(f_));
  std::vector<int64_t> at(N_, 0);
  for (int o = 1; o < N_; ++o) at[o] = at[o - 1] + x.send_counts[o - 1] / static_cast<int64_t>(sizeof(float));
  const float* rows = g.rows[tensor_[j]].f32();
  for (int32_t id : mine) {
    const auto it = std::lower_bound(g.index.unique.begin(), g.index.unique.end(), id);
    STEM_CHECKF(it != g.index.unique.end() && *it == id, "ShardedTables: token %d has no gradient row", id);
    std::memcpy(x.send.data() + at[owner(id)], rows + (it - g.index.unique.begin()) * f_, sizeof(float) * f_);
    at[owner(id)] += f_;
  }
  int64_t total = 0;
  for (int64_t c : x.recv_counts) total += c;
  x.recv.resize(static_cast<size_t>(total) / sizeof(float));
  for (int s = 0; s < N_; ++s)
    if (s != me_) traffic_.grad_bytes += x.send_counts[s];
  return comm_.start_all_to_all_v(x.send.data(), x.send_counts, x.recv.data(), x.recv_counts)
      .with_context("train: sending table gradients to their owners");
}

Status ShardedTables::reduce(const model::Gradients& g, double* sum_squares) {
  if (grads_.size() != static_cast<size_t>(M_)) grads_.assign(static_cast<size_t>(M_), Exchange{});
  for (int64_t j = 0; j < M_; ++j)  // layers whose backward did not start theirs
    if (grads_[j].send_counts.empty()) STEM_RETURN_IF_ERROR(start_reduce(static_cast<int>(j), g));
  STEM_RETURN_IF_ERROR(comm_.wait_all().with_context("train: sending table gradients to their owners"));
  // Summed at the owner in rank order.
  touched_.clear();
  for (int s = 0; s < N_; ++s)
    for (int32_t id : ids_of_[s])
      if (owner(id) == me_) touched_.push_back(id);
  std::sort(touched_.begin(), touched_.end());
  touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
  const int64_t T = static_cast<int64_t>(touched_.size());
  sum_.assign(static_cast<size_t>(M_ * T * f_), 0.0f);
  for (int64_t j = 0; j < M_; ++j) {
    const float* src = grads_[j].recv.data();
    for (int s = 0; s < N_; ++s)
      for (int32_t id : ids_of_[s]) {
        if (owner(id) != me_) continue;
        const int64_t t = std::lower_bound(touched_.begin(), touched_.end(), id) - touched_.begin();
        float* d = sum_.data() + (j * T + t) * f_;
        for (int64_t c = 0; c < f_; ++c) d[c] += src[c];
        src += f_;
      }
  }
  grads_.clear();
  // Each row's square at its place among the step's ids; summed over ranks
  // (exact: one rank holds each), then in one order everywhere.
  const int64_t U = g.index.n_unique();
  row_ss_.assign(static_cast<size_t>(M_ * U), 0.0);
  const kernels::Ops& k = backends::cpu().ops();
  for (int64_t t = 0; t < T; ++t) {
    const auto it = std::lower_bound(g.index.unique.begin(), g.index.unique.end(), touched_[t]);
    const int64_t u = it - g.index.unique.begin();
    for (int64_t j = 0; j < M_; ++j) row_ss_[j * U + u] = k.sum_squares(sum_.data() + (j * T + t) * f_, f_);
  }
  STEM_RETURN_IF_ERROR(comm_.all_reduce_sum(row_ss_.data(), M_ * U).with_context("train: the STEM gradient norm"));
  *sum_squares = 0;
  for (double x : row_ss_) *sum_squares += x;
  return ok_status();
}

void ShardedTables::scale(float factor) {
  backends::cpu().ops().scale_inplace(sum_.data(), static_cast<int64_t>(sum_.size()), factor);
}

Status ShardedTables::step(float lr) {
  const int64_t T = static_cast<int64_t>(touched_.size());
  if (adam_.lazy(static_cast<size_t>(tensor_[0]))) {  // every table is: the touched rows staged, stepped, put back
    std::vector<int32_t> local(touched_.size());
    for (int64_t t = 0; t < T; ++t) local[t] = touched_[t] / N_;
    std::vector<float> staged;  // [3M, T, f]: p of every table, then m, then v
    STEM_RETURN_IF_ERROR(fetch_rows(local, static_cast<int>(3 * M_), &staged).with_context("train: table rows"));
    for (int64_t j = 0; j < M_; ++j) {
      float* at = staged.data() + j * T * f_;
      adam_.step_rows(static_cast<size_t>(tensor_[j]), at, at + M_ * T * f_, at + 2 * M_ * T * f_,
                      sum_.data() + j * T * f_, touched_.data(), T, lr);
    }
    return store_rows(local, staged).with_context("train: table rows");
  }
  kernels::RowIndex index;  // dense AdamW: every owned row steps, the touched ones with their gradient
  for (int32_t id : touched_) index.unique.push_back(id / N_);
  for (int64_t j = 0; j < M_; ++j)
    adam_.step_shard(static_cast<size_t>(tensor_[j]), ram_[j].data(), ram_[M_ + j].data(), ram_[2 * M_ + j].data(),
                     sum_.data() + j * T * f_, index, R_, lr);
  return ok_status();
}

Status ShardedTables::merge_last_steps() {
  for (int i : tensor_)
    if (adam_.lazy(static_cast<size_t>(i)))
      STEM_RETURN_IF_ERROR(comm_.all_reduce_max(adam_.last_step()[i].i32(), V_).with_context("checkpoint"));
  return ok_status();
}

Status ShardedTables::gather_block(int j, int kind, int64_t r0, int64_t n, std::vector<float>* out) {
  const int t = static_cast<int>((kind == 1 ? M_ : kind == 2 ? 2 * M_ : 0) + j);
  auto owned_in = [&](int s) {  // ids of rank s in [r0, r0 + n)
    const int64_t first = r0 + ((s - r0 % N_) % N_ + N_) % N_;
    return first >= r0 + n ? int64_t{0} : (r0 + n - 1 - first) / N_ + 1;
  };
  const int64_t mine = owned_in(me_), first = r0 + ((me_ - r0 % N_) % N_ + N_) % N_;
  std::vector<float> send(static_cast<size_t>(mine * f_));
  if (mine > 0) STEM_RETURN_IF_ERROR(read_rows(t, first / N_, mine, send.data()).with_context("checkpoint"));
  std::vector<int64_t> counts(N_);
  for (int s = 0; s < N_; ++s) counts[s] = owned_in(s) * f_ * static_cast<int64_t>(sizeof(float));
  std::vector<float> recv(me_ == 0 ? static_cast<size_t>(n * f_) : 0);
  STEM_RETURN_IF_ERROR(comm_.gather_v(send.data(), static_cast<int64_t>(send.size() * sizeof(float)), recv.data(),
                                      counts, 0)
                           .with_context("checkpoint: gathering table rows"));
  if (me_ != 0) return ok_status();
  // Rank s's rows arrive together; row r is the next of rank r % N's.
  std::vector<int64_t> at(N_, 0);
  for (int s = 1; s < N_; ++s) at[s] = at[s - 1] + counts[s - 1] / static_cast<int64_t>(sizeof(float));
  out->resize(static_cast<size_t>(n * f_));
  for (int64_t r = r0; r < r0 + n; ++r) {
    const int s = owner(static_cast<int32_t>(r));
    std::memcpy(out->data() + (r - r0) * f_, recv.data() + at[s], sizeof(float) * f_);
    at[s] += f_;
  }
  return ok_status();
}

bool ShardedTables::holds(size_t i) const {
  return std::find(tensor_.begin(), tensor_.end(), static_cast<int>(i)) != tensor_.end();
}

Status ShardedTables::gather(size_t i, int kind, const io::ByteSink* sink) {
  const auto it = std::find(tensor_.begin(), tensor_.end(), static_cast<int>(i));
  STEM_CHECKF(it != tensor_.end() && kind >= 0 && kind < 4, "ShardedTables: tensor %zu kind %d is not sharded", i, kind);
  const int j = static_cast<int>(it - tensor_.begin());
  // Every block is gathered even after the sink fails, so the others finish the request.
  Status sunk;
  std::vector<float> block;
  for (int64_t r0 = 0; r0 < V_; r0 += kBlockRows) {
    const int64_t n = std::min(kBlockRows, V_ - r0);
    STEM_RETURN_IF_ERROR(gather_block(j, kind, r0, n, me_ == 0 ? &block : nullptr));
    if (me_ != 0 || !sunk.ok()) continue;
    if (kind == 0 && adam_.lazy(i)) adam_.apply_pending(i, r0, n, 0, block.data());
    sunk = (*sink)(block.data(), block.size() * sizeof(float));
  }
  return sunk;
}

int64_t ShardedTables::shard_bytes() const { return 3 * M_ * R_ * f_ * static_cast<int64_t>(sizeof(float)); }

int64_t ShardedTables::dense_allreduce_bytes() const {
  return 2 * (N_ - 1) * M_ * V_ * f_ * static_cast<int64_t>(sizeof(float)) / N_;
}

}  // namespace stem::train
