// Editing what a model knows, on a loaded model: edit overlays (files of STEM
// row replacements made by `stem edit swap|inject`) applied and reverted, and
// single STEM table rows read and written, wherever the tables live (in RAM
// the weights change; with --tables mmap|disk the rows become the table
// store's overrides, the file is never touched). A checkpoint on disk never
// changes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stem/model.h"
#include "stem/status.h"

namespace stem {

// Overlays applied in order, undone in reverse by revert() (bit for bit).
class AppliedEdits {
 public:
  AppliedEdits();
  ~AppliedEdits();
  AppliedEdits(AppliedEdits&&) noexcept;
  AppliedEdits& operator=(AppliedEdits&&) noexcept;
  Status revert();  // once; later calls do nothing
  size_t rows() const;  // rows replaced

 private:
  friend Result<AppliedEdits> apply_overlays(Model&, const std::vector<std::string>&);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// Errors name the overlay file (malformed, made for another shape, a
// non-STEM layer). The edits stay until revert(), also when AppliedEdits is
// destroyed.
Result<AppliedEdits> apply_overlays(Model& model, const std::vector<std::string>& files);

// Row `token` of STEM layer `layer`'s table [V, f] (layer: the model's layer
// index, which must be a STEM layer).
Result<std::vector<float>> read_table_row(Model& model, int32_t layer, int32_t token);
Status write_table_row(Model& model, int32_t layer, int32_t token, const std::vector<float>& row);
// STEM layer `layer`'s whole table as an F32 [V, f] array in memory, to read
// and write in place (no copy), when it is held in RAM as F32 (the default
// load); null otherwise (use read_table_row). Valid while the model lives.
float* table_data(Model& model, int32_t layer);

}  // namespace stem
