// TableTier: the trainer's STEM tables, with their lazy AdamW moments, kept in
// a row file on disk instead of memory. Training then holds in memory only
// the rows of the step at hand and of the next one:
//   - the next step's token ids are known before the current step computes:
//     submit() hands them to a Prefetcher, which reads the deduplicated rows
//     (table, first and second moment of every STEM layer: one record per id)
//     on a background thread while the current step runs;
//   - the step's forward and backward read its rows from the staging buffer
//     (use()); after AdamW's dense step, end_step() updates the rows in place
//     (lazy AdamW, the same arithmetic as in memory), writes them back, and
//     re-stages those of the next step's rows that this step changed, since
//     the background read may have seen them before the write.
// So training with the tables on disk computes bit for bit what lazy AdamW
// with the tables in memory does. For a checkpoint, stream() hands the
// checkpoint writer each table and moment piece by piece, the model's tables
// with their pending lazy decay applied on the way out (the file keeps the
// optimizer's state as it is, so a save never changes the run): the tables are
// never whole in memory, except once at start when they are moved out.
// It knows the model's tensor list but not the training loop.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "memory/prefetcher.h"
#include "memory/row_file.h"
#include "model/transformer.h"
#include "train/adamw.h"
#include "train/trainer.h"

namespace stem::train {

class TableTier {
 public:
  // Moves tr's STEM tables and adam's moments for them (lazy AdamW) into a row
  // file created in `dir`, freeing them. Steps hold up to max_ids tokens.
  static Result<std::unique_ptr<TableTier>> create(model::Transformer& tr, AdamW& adam,
                                                   const std::string& dir, int64_t max_ids,
                                                   bool prefetch);
  ~TableTier();

  // Stages the rows of a step's tokens (every micro-batch). At most one step
  // may be staged ahead of the current one.
  void submit(const int32_t* tokens, int64_t n);
  // Makes the oldest submitted step current, waiting for its rows.
  Status begin_step();
  // Points tr at the current step's rows for its tokens [offset, offset + n).
  void use(const int32_t* tokens, int64_t offset, int64_t n);
  // After adam.step(): the current rows' lazy AdamW update from g (rows of the
  // same distinct tokens), written back; the next step's stale rows re-staged.
  Status end_step(const model::Gradients& g, float lr);
  // Forward outside a step (validation): fetches the tables' rows of tokens
  // synchronously and points tr at them.
  Status use_for_eval(const int32_t* tokens, int64_t n);

  // Tensor i (a STEM table): its [V, f] F32 bytes in row order, into the sink.
  // kind 0: the weights as the model has them (pending lazy decay applied);
  // 1, 2: the first and second moment, 3: the weights, as the optimizer keeps
  // them (see AdamW). Between steps only.
  Status stream(size_t i, int kind, const io::ByteSink& sink);

  TableTierStats stats() const;

 private:
  TableTier(model::Transformer& tr, AdamW& adam) : tr_(tr), adam_(adam) {}
  float* row(const memory::StagedRows& s, int kind, int j, int64_t u) const;  // kind 0 p, 1 m, 2 v
  // Copies rows of `src` into `dst` for the ids both hold.
  void restage(const memory::StagedRows& dst, const memory::StagedRows& src) const;
  Status move_out();  // the in-memory tables and moments into the file, then freed
  Result<const memory::StagedRows*> wait_next();  // pf_->wait(next_), timed

  model::Transformer& tr_;
  AdamW& adam_;
  std::vector<int> tensor_;  // [M] tensor index of STEM layer j's table
  int64_t M_ = 0, f_ = 0, V_ = 0;
  std::unique_ptr<memory::RowFile> file_;  // 3M tables: p of every layer, then m, then v
  std::unique_ptr<memory::Prefetcher> pf_;
  memory::Prefetcher::Ticket cur_ = -1, next_ = -1;  // -1: none
  const memory::StagedRows* cur_rows_ = nullptr;
  const memory::StagedRows* next_rows_ = nullptr;  // waited for already (re-staged by end_step)
  std::vector<const float*> use_ptrs_;       // [M] current p rows
  std::shared_ptr<model::GivenRows> given_;  // how the rows reach the model
  // Hands the model rows[j] + slot_of[i] * f for tokens[i] (until the next call or end_step).
  void given(const int32_t* tokens, int64_t n, const int32_t* slot_of, const float* const* rows);
  double stall_s_ = 0;                       // in wait_next()
  std::vector<float> eval_rows_;             // [M, U, f] validation rows
  kernels::RowIndex eval_;                   // validation tokens: distinct ids, row of each
};

}  // namespace stem::train
