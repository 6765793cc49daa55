// Applying edit overlays (the format: include/stem/overlay.h) to STEM tables
// wherever they live: applying goes through RowTable, one row of one layer's
// table at a time, so that tables held anywhere (in a TensorList, or in a tier
// of src/memory/) take the same entries. It does not decide what to edit
// (swap.h, inject.h do).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/weights.h"
#include "stem/overlay.h"

namespace stem::edit {

// Where STEM rows live: one row of one layer's table at a time. A table tier
// that keeps rows outside a TensorList implements this to take overlays.
class RowTable {
 public:
  virtual ~RowTable() = default;
  virtual int64_t row_width() const = 0;
  // out[row_width()] = the current row. Errors: layer without a table, token
  // out of range, I/O.
  virtual Status read_row(int32_t layer, int32_t token, float* out) = 0;
  virtual Status write_row(int32_t layer, int32_t token, const float* row) = 0;
};

// RowTable over the STEM tables of a weight list (model.layers.{l}.mlp.
// stem_embedding.weight, F32 [V, f]). Holds a reference: `w` must outlive it.
class TensorListRows : public RowTable {
 public:
  explicit TensorListRows(model::TensorList& w);
  int64_t row_width() const override { return f_; }
  // An error when some STEM table is not held in the list (served by a table
  // store instead): edits, injection and edit evaluation need them all here.
  Status all_resident() const;
  Status read_row(int32_t layer, int32_t token, float* out) override;
  Status write_row(int32_t layer, int32_t token, const float* row) override;

 private:
  Result<float*> locate(int32_t layer, int32_t token);
  model::TensorList& w_;
  std::vector<int> table_of_layer_;  // tensor index per layer; -1 not STEM, -2 table not in the list
  int64_t f_ = 0, V_ = 0;
};

// Writes every entry of `ov` into `table` and returns the rows it replaced as
// an overlay (same shape, note {"kind": "revert"}): applying that one puts the
// table back bit for bit. All previous rows are read before anything is
// written; if a write fails, the rows already written are put back (best
// effort) and the error is returned.
Result<Overlay> apply_overlay(const Overlay& ov, RowTable& table);
// The same on a model's weight list.
Result<Overlay> apply_overlay(const Overlay& ov, model::TensorList& weights);

// Reads, checks against `cfg` and applies each file in order. Fills `undo`
// (when given) with one revert overlay per file, in the order applied: revert
// in reverse order. Errors name the file.
Status apply_overlay_files(const std::vector<std::string>& files, const ModelConfig& cfg,
                           RowTable& table, std::vector<Overlay>* undo = nullptr);
Status apply_overlay_files(const std::vector<std::string>& files, const ModelConfig& cfg,
                           model::TensorList& weights, std::vector<Overlay>* undo = nullptr);

// Applies `undo` (as filled above) in reverse order.
Status revert_overlays(const std::vector<Overlay>& undo, RowTable& table);
Status revert_overlays(const std::vector<Overlay>& undo, model::TensorList& weights);

}  // namespace stem::edit
