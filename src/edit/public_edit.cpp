// The public editing API (include/stem/edit.h) over overlays and RowTable.
#include "edit/overlay.h"
#include "edit/store_rows.h"
#include "stem/edit.h"

namespace stem {

struct AppliedEdits::Impl {
  std::unique_ptr<edit::RowTable> rows;
  std::vector<edit::Overlay> undo;
  size_t n_rows = 0;
};

AppliedEdits::AppliedEdits() : impl_(std::make_unique<Impl>()) {}
AppliedEdits::~AppliedEdits() = default;
AppliedEdits::AppliedEdits(AppliedEdits&&) noexcept = default;
AppliedEdits& AppliedEdits::operator=(AppliedEdits&&) noexcept = default;
size_t AppliedEdits::rows() const { return impl_ ? impl_->n_rows : 0; }

Status AppliedEdits::revert() {
  if (!impl_ || impl_->undo.empty()) return ok_status();
  Status st = edit::revert_overlays(impl_->undo, *impl_->rows);
  impl_->undo.clear();
  return st;
}

Result<AppliedEdits> apply_overlays(Model& model, const std::vector<std::string>& files) {
  AppliedEdits a;
  a.impl_->rows = edit::model_rows(model.impl());
  STEM_RETURN_IF_ERROR(edit::apply_overlay_files(files, model.config(), *a.impl_->rows, &a.impl_->undo));
  for (const edit::Overlay& o : a.impl_->undo) a.impl_->n_rows += o.size();
  return a;
}

Result<std::vector<float>> read_table_row(Model& model, int32_t layer, int32_t token) {
  std::unique_ptr<edit::RowTable> rows = edit::model_rows(model.impl());
  std::vector<float> out(static_cast<size_t>(model.config().intermediate_size));
  STEM_RETURN_IF_ERROR(rows->read_row(layer, token, out.data()));
  return out;
}

Status write_table_row(Model& model, int32_t layer, int32_t token, const std::vector<float>& row) {
  if (static_cast<int64_t>(row.size()) != model.config().intermediate_size)
    return Status::error("table row: " + std::to_string(row.size()) + " values, expected intermediate_size = " +
                         std::to_string(model.config().intermediate_size));
  std::unique_ptr<edit::RowTable> rows = edit::model_rows(model.impl());
  return rows->write_row(layer, token, row.data());
}

float* table_data(Model& model, int32_t layer) {
  const ModelConfig& c = model.config();
  if (layer < 0 || layer >= c.num_hidden_layers || c.ffn_types[layer] != FfnType::Stem) return nullptr;
  model::Transformer& t = model.impl();
  if (t.table_store()) return nullptr;
  Tensor& w = t.weights()[t.layer(layer).i_stem];
  return !w.empty() && w.dtype() == DType::F32 ? w.f32() : nullptr;
}

}  // namespace stem
