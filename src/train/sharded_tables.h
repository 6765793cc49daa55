// ShardedTables: a rank's share of the STEM tables when training runs on
// several processes (data parallel). Rank r of N owns the rows id % N == r of
// every STEM table, with their AdamW moments (and, for lazy AdamW, their
// last-step bookkeeping, kept in the optimizer). The rest of the model is
// replicated on every rank. Per step:
//   - fetch(): every rank knows every rank's tokens (the global batch is drawn
//     from one seeded RNG), so each owner sends each rank the rows of that
//     rank's distinct ids it owns, in id order, and no id lists travel; the
//     rows reach the model as given rows (use(), per micro-batch);
//   - reduce(): each rank sends the row gradients of its distinct ids to
//     their owners, a layer at a time as backward finishes it
//     (start_reduce()); the owners sum them in rank order and return their
//     share of the global STEM gradient norm's square;
//   - step(): each owner applies AdamW to its rows, lazily or densely as the
//     optimizer says, with the arithmetic of the one-process step.
// Only touched rows move. For a checkpoint the ranks gather each table to
// rank 0 a block of rows at a time (gather()), and at the start each rank
// reads or draws the tables a block at a time keeping its rows, so no rank
// ever holds a whole table.
// It knows the model's tensor list and the communicator, not the loop.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "io/safetensors.h"
#include "memory/row_file.h"
#include "model/row_provider.h"
#include "model/transformer.h"
#include "train/adamw.h"

namespace stem::train {

struct ShardTraffic {
  int64_t fetch_bytes = 0, grad_bytes = 0;  // rows this rank sent to others, so far
  int64_t prefetch_bytes = 0;               // of fetch_bytes: sent during the step before
};

class ShardedTables {
 public:
  // Where the tables start: tensor i's `kind` (0 the weights as the
  // optimizer keeps them, 1 and 2 the moments) handed to `block` in row
  // order, a block at a time; rows a source does not hand over start at 0
  // (fresh moments).
  using RowBlock = std::function<void(int64_t r0, int64_t n, const float* rows)>;
  using RowSource = std::function<Status(size_t i, int kind, const RowBlock& block)>;
  // Keeps this rank's rows of tr's STEM tables and their moments, read from
  // `source`; the tables are empty in tr's weights and adam's moments (they
  // were never whole in this process), and stay so. With a `disk_dir` the
  // rows live in a row file created there (unlinked at once; lazy AdamW
  // only, so that a step reads and writes only its rows), else in memory.
  static Result<std::unique_ptr<ShardedTables>> create(model::Transformer& tr, AdamW& adam, dist::Comm& comm,
                                                       const RowSource& source, const std::string& disk_dir = "");

  // Collective. tokens_of[s]: the ids rank s runs next (the same list on every
  // rank; a rank may have none). Fetches this rank's rows from their owners.
  Status fetch(const std::vector<std::span<const int32_t>>& tokens_of);
  // Lazy AdamW, after fetch() of this step: starts sending each rank the
  // rows of its next-step ids that this step does not touch (they cannot
  // change before then), so that they travel while this step computes. The
  // fetch() of exactly those tokens then waits for them (comm.wait_all(),
  // which the step's gradient sums call anyway) and fetches only the rest;
  // a fetch of other tokens (validation) leaves them waiting. Collective.
  Status prefetch(const std::vector<std::span<const int32_t>>& next_of);
  // Points tr at the fetched rows for this rank's tokens [offset, offset + n).
  void use(const int32_t* tokens, int64_t offset, int64_t n);
  // Collective, during the last backward: starts sending STEM layer j's row
  // gradients (final once its backward stage is) to their owners, so that
  // they travel while the layers below run.
  Status start_reduce(int j, const model::Gradients& g);
  // Collective, after backward. g holds this rank's row gradients at g.index
  // (the ids of the whole global step). Sends the layers not started yet,
  // waits (comm.wait_all()), and sums every rank's rows at their owners, in
  // rank order. *sum_squares gets the squared STEM norm, the same on every
  // rank and equal to one process's (stem_sum_squares: row by row, in id
  // order, the owners' rows' squares all-reduced).
  Status reduce(const model::Gradients& g, double* sum_squares);
  void scale(float factor);  // the summed gradients (clipping)
  // After adam.step(): AdamW on this rank's touched rows (lazy), or on all
  // its rows (dense).
  Status step(float lr);
  void release();  // the model reads its tables again (no given rows)

  // Checkpoints (between steps). Lazy AdamW: every rank's last-step records
  // merged, so that rank 0 holds each row's from its owner. Collective.
  Status merge_last_steps();
  bool holds(size_t i) const;  // tensor i is a table sharded here
  // Collective: tensor i's rows (kind as in StateStream: 0 weights with
  // pending decay applied, 1 and 2 moments, 3 weights as the optimizer keeps
  // them) gathered from the owners a block at a time, in row order, into
  // `sink` at rank 0 (null on the other ranks).
  Status gather(size_t i, int kind, const io::ByteSink* sink);

  ShardTraffic traffic() const { return traffic_; }
  int64_t shard_bytes() const;  // this rank's rows and moments, all tables
  const memory::RowFile* file() const { return file_.get(); }  // null: in memory
  // Bytes a dense all-reduce of every table gradient would send from one rank
  // per step (ring: 2 (N-1)/N of the tables).
  int64_t dense_allreduce_bytes() const;

 private:
  ShardedTables(model::Transformer& tr, AdamW& adam, dist::Comm& comm) : tr_(tr), adam_(adam), comm_(comm) {}
  int owner(int32_t id) const { return id % N_; }
  int64_t first_owned(int64_t r0) const { return r0 + ((me_ - r0 % N_) % N_ + N_) % N_; }  // the first row >= r0 of mine
  // Table t (kind * M + j: kind 0 weights, 1 and 2 the moments), local rows:
  // [k0, k0 + n) from or to [n, f]; local[] into out [tables, n, f] (tables
  // 0 .. tables - 1); all 3M tables of local[] from rows [3M, n, f].
  Status write_rows(int t, int64_t k0, int64_t n, const float* src);
  Status read_rows(int t, int64_t k0, int64_t n, float* dst);
  Status fetch_rows(const std::vector<int32_t>& local, int tables, std::vector<float>* out);
  Status store_rows(const std::vector<int32_t>& local, const std::vector<float>& rows);
  // Rows travelling to the ranks that read them: the owners' rows of each
  // rank's ids (every STEM layer of an id together, in id order), the counts
  // of both sides, and the receive buffer.
  struct Exchange {
    std::vector<float> send, recv;
    std::vector<int64_t> send_counts, recv_counts;
  };
  Status pack(const std::vector<std::vector<int32_t>>& ids_of, Exchange* x);
  // Puts x's rows of this rank's `ids` into rows_ at their place in mine_.
  void place(const std::vector<int32_t>& ids, const Exchange& x);
  // Rows [r0, r0 + n) of the whole table j, kind 0..3, this rank's part, gathered at root.
  Status gather_block(int j, int kind, int64_t r0, int64_t n, std::vector<float>* out);

  model::Transformer& tr_;
  AdamW& adam_;
  dist::Comm& comm_;
  int N_ = 1, me_ = 0;
  int64_t M_ = 0, f_ = 0, V_ = 0, R_ = 0;  // STEM layers, d_ff, vocabulary, rows owned
  std::vector<int> tensor_;                // [M] tensor index of STEM layer j's table
  // This rank's rows, local row k = id k * N + me, of table t = kind * M + j:
  // in memory [3M][R, f], or in a row file of R records of 3M rows.
  std::vector<std::vector<float>> ram_;
  std::unique_ptr<memory::RowFile> file_;
  // The current step: every rank's distinct ids, this rank's rows and index.
  std::vector<std::vector<int32_t>> ids_of_;  // [N] sorted distinct ids of rank s
  kernels::RowIndex mine_;                    // this rank's tokens: distinct ids and the row of each
  std::vector<float> rows_;                   // [M, U_mine, f] fetched rows
  std::vector<const float*> use_ptrs_;        // [M]
  struct Prefetch {
    bool started = false;
    std::vector<std::vector<int32_t>> tokens;  // [N] the tokens of each rank it is for
    std::vector<std::vector<int32_t>> early;   // [N] their distinct ids this step does not touch
    Exchange x;
  } pf_;
  std::shared_ptr<model::GivenRows> given_;
  std::vector<Exchange> grads_;  // [M] row gradients on their way to owners (this step's)
  // Summed gradients of the owned rows touched by any rank.
  std::vector<int32_t> touched_;   // sorted global ids
  std::vector<float> sum_;         // [M, touched, f]
  std::vector<double> row_ss_;     // [M, U] squared norms of the step's rows (zero where not owned here)
  ShardTraffic traffic_;
};

}  // namespace stem::train
