// StoreRows and model_rows (see store_rows.h).
#include "edit/store_rows.h"

#include <cstring>
#include <string>

namespace stem::edit {

StoreRows::StoreRows(model::Transformer& m) : m_(m), f_(m.config().intermediate_size) {
  memory::TableStore* s = m_.table_store();
  STEM_CHECK(s != nullptr);
  tmp_.assign(static_cast<size_t>(s->n_tables() * f_), 0.0f);
  for (int64_t t = 0; t < s->n_tables(); ++t) dst_.push_back(tmp_.data() + t * f_);
}

Result<int> StoreRows::slot_of(int32_t layer, int32_t token) const {
  const ModelConfig& c = m_.config();
  if (layer < 0 || layer >= c.num_hidden_layers || m_.stem_slot(layer) < 0)
    return Status::error("layer " + std::to_string(layer) + " is not a STEM layer of this model");
  if (token < 0 || token >= c.vocab_size)
    return Status::error("token " + std::to_string(token) + " is outside [0, " + std::to_string(c.vocab_size) + ")");
  return m_.stem_slot(layer);
}

Status StoreRows::read_row(int32_t layer, int32_t token, float* out) {
  STEM_ASSIGN_OR_RETURN(int slot, slot_of(layer, token));
  STEM_RETURN_IF_ERROR(m_.table_store()->fetch(&token, 1, dst_.data()));
  std::memcpy(out, dst_[slot], sizeof(float) * f_);
  return ok_status();
}

Status StoreRows::write_row(int32_t layer, int32_t token, const float* row) {
  STEM_ASSIGN_OR_RETURN(int slot, slot_of(layer, token));
  return m_.table_store()->set_override(slot, token, row);
}

std::unique_ptr<RowTable> model_rows(model::Transformer& m) {
  if (m.table_store()) return std::make_unique<StoreRows>(m);
  return std::make_unique<TensorListRows>(m.weights());
}

}  // namespace stem::edit
