// RowProvider: the one way STEM table rows reach the FFN, whoever holds them.
// For a set of token ids it yields, for every STEM layer (in layer order), a
// row source `rows [R, f]` and each position's row in it `row_of [n]`: the
// shape the STEM FFN kernels read. The Transformer (training, scoring) and
// the Decoder (prefill and decode) ask their provider and nothing else.
//
// Providers:
//   rows_in_place   whole tables addressable in memory (the weight list, or
//                   a table store that maps its rows in place): R = V and
//                   row_of = the ids; nothing is copied.
//   rows_staged     a memory::Prefetcher over a RowSource (a table store on
//                   any tier): the distinct ids' rows staged, in the
//                   background when async, row_of = slots.
//   GivenRows       rows the caller staged itself (the trainer's disk tier,
//                   which also writes them back after the optimizer step).
// Every provider hands the FFN the same row values for the same ids, so
// logits do not depend on which one serves them.
//
// Protocol (that of memory::Prefetcher): t = submit(ids) ... wait(t) gives the
// rows, valid until release(t); at most two tickets outstanding, so the next
// set can be submitted while the current one is read. One caller thread.
// Errors (a failed read) come back from wait(). A provider does not know
// layers or models: M row sources in, rows out.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "memory/prefetcher.h"
#include "stem/status.h"

namespace stem::model {

struct StemRows {
  const float* const* rows = nullptr;  // [M] row source of each STEM layer, each [R, f]
  const int32_t* row_of = nullptr;     // [n] each position's row in them
};

class RowProvider {
 public:
  using Ticket = int64_t;
  virtual ~RowProvider() = default;
  // Starts providing the rows of ids[0..n) (ids copied: the caller's array may
  // change at once).
  virtual Ticket submit(const int32_t* ids, int64_t n) = 0;
  virtual Result<StemRows> wait(Ticket t) = 0;
  virtual void release(Ticket t) = 0;
  // The prefetcher behind the provider, if any (for its timers).
  virtual memory::Prefetcher* prefetcher() { return nullptr; }
};

// tables[j]: STEM layer j's whole table [V, f], which must outlive the provider.
std::unique_ptr<RowProvider> rows_in_place(std::vector<const float*> tables);
// Rows of `source` (its tables = the STEM layers in order) staged for up to
// max_ids ids a submit; the source must outlive the provider.
std::unique_ptr<RowProvider> rows_staged(memory::RowSource& source, int64_t max_ids, bool async);

// Rows staged by the caller: set() names them for one set of ids, and a
// submit of exactly those ids serves them (a submit of others is a bug).
class GivenRows final : public RowProvider {
 public:
  explicit GivenRows(int64_t n_tables) : rows_(static_cast<size_t>(n_tables), nullptr) {}
  // rows[j] + slot_of[i] * f is STEM layer j's row for position i; the arrays
  // must stay valid until the rows are released.
  void set(const int32_t* ids, int64_t n, const int32_t* slot_of, const float* const* rows);
  Ticket submit(const int32_t* ids, int64_t n) override;
  Result<StemRows> wait(Ticket t) override;
  void release(Ticket t) override {}

 private:
  std::vector<int32_t> ids_;
  const int32_t* slot_of_ = nullptr;
  std::vector<const float*> rows_;
};

}  // namespace stem::model
