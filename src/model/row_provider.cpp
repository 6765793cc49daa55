// The row providers of row_provider.h: whole tables read in place, rows
// staged by a prefetcher, rows given by the caller.
#include "model/row_provider.h"

#include <algorithm>
#include <string>

#include "core/check.h"

namespace stem::model {
namespace {

// Whole tables: row_of is the ids themselves, kept per ticket (two slots, as
// the prefetcher's protocol allows two sets outstanding).
class InPlaceRows final : public RowProvider {
 public:
  explicit InPlaceRows(std::vector<const float*> tables) : tables_(std::move(tables)) {}

  Ticket submit(const int32_t* ids, int64_t n) override {
    Slot& s = slot_[next_ % 2];
    STEM_CHECKF(s.ticket < 0, "row provider: a third set submitted while two are outstanding");
    s.ticket = next_++;
    s.ids.assign(ids, ids + n);
    return s.ticket;
  }
  Result<StemRows> wait(Ticket t) override {
    for (const Slot& s : slot_)
      if (s.ticket == t) return StemRows{tables_.data(), s.ids.data()};
    STEM_CHECKF(false, "row provider: ticket %lld is not outstanding", static_cast<long long>(t));
    return Status::error("unreachable");
  }
  void release(Ticket t) override {
    for (Slot& s : slot_)
      if (s.ticket == t) s.ticket = -1;
  }

 private:
  struct Slot {
    Ticket ticket = -1;
    std::vector<int32_t> ids;
  };
  std::vector<const float*> tables_;
  Slot slot_[2];
  Ticket next_ = 0;
};

class StagedRowsProvider final : public RowProvider {
 public:
  StagedRowsProvider(memory::RowSource& source, int64_t max_ids, bool async)
      : pf_(source, max_ids, async) {}

  Ticket submit(const int32_t* ids, int64_t n) override { return pf_.submit(ids, n); }
  Result<StemRows> wait(Ticket t) override {
    auto r = pf_.wait(t);
    if (!r.ok()) return r.status();
    const memory::StagedRows& s = **r;
    rows_.assign(s.rows.begin(), s.rows.end());  // the prefetcher's rows are float*, the FFN's const
    return StemRows{rows_.data(), s.slot_of.data()};
  }
  void release(Ticket t) override { pf_.release(t); }
  memory::Prefetcher* prefetcher() override { return &pf_; }

 private:
  memory::Prefetcher pf_;
  std::vector<const float*> rows_;
};

}  // namespace

std::unique_ptr<RowProvider> rows_in_place(std::vector<const float*> tables) {
  return std::make_unique<InPlaceRows>(std::move(tables));
}

std::unique_ptr<RowProvider> rows_staged(memory::RowSource& source, int64_t max_ids, bool async) {
  return std::make_unique<StagedRowsProvider>(source, max_ids, async);
}

void GivenRows::set(const int32_t* ids, int64_t n, const int32_t* slot_of, const float* const* rows) {
  STEM_CHECK(n >= 1 && ids && slot_of && rows);
  ids_.assign(ids, ids + n);
  slot_of_ = slot_of;
  std::copy(rows, rows + rows_.size(), rows_.begin());
}

RowProvider::Ticket GivenRows::submit(const int32_t* ids, int64_t n) {
  STEM_CHECKF(slot_of_ && static_cast<int64_t>(ids_.size()) == n && std::equal(ids, ids + n, ids_.begin()),
              "row provider: rows were given for other ids than the %lld submitted", static_cast<long long>(n));
  return 0;
}

Result<StemRows> GivenRows::wait(Ticket) { return StemRows{rows_.data(), slot_of_}; }

}  // namespace stem::model
