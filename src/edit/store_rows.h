// RowTable views of a model's STEM tables wherever they live: in the weight
// list (TensorListRows, overlay.h) or in a memory::TableStore (StoreRows, whose
// writes become the store's row overrides, so the file is never touched and
// every tier serves the edited rows). model_rows() picks the right one.
#pragma once

#include <memory>
#include <vector>

#include "edit/overlay.h"
#include "model/transformer.h"

namespace stem::edit {

class StoreRows : public RowTable {
 public:
  // `m` must have a table store and outlive this view.
  explicit StoreRows(model::Transformer& m);
  int64_t row_width() const override { return f_; }
  Status read_row(int32_t layer, int32_t token, float* out) override;
  Status write_row(int32_t layer, int32_t token, const float* row) override;

 private:
  Result<int> slot_of(int32_t layer, int32_t token) const;
  model::Transformer& m_;
  int64_t f_ = 0;
  std::vector<float> tmp_;     // [M, f] one token's rows of every table
  std::vector<float*> dst_;    // [M] into tmp_
};

// The STEM rows of `m`, wherever its tables are.
std::unique_ptr<RowTable> model_rows(model::Transformer& m);

}  // namespace stem::edit
