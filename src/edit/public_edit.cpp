// The public editing and analysis API (include/stem/edit.h, analyze.h) on a
// stem::Model: each call reaches the engine and its tables (RowTable, wherever
// they live) and hands over to the internal edit/ functions.
#include "edit/analyze.h"
#include "edit/edit_eval.h"
#include "edit/inject.h"
#include "edit/overlay.h"
#include "edit/store_rows.h"
#include "edit/swap.h"
#include "edit/swap_train.h"
#include "model/engine.h"
#include "stem/analyze.h"
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
  a.impl_->rows = edit::model_rows(engine(model));
  STEM_RETURN_IF_ERROR(edit::apply_overlay_files(files, model.config(), *a.impl_->rows, &a.impl_->undo));
  for (const edit::Overlay& o : a.impl_->undo) a.impl_->n_rows += o.size();
  return a;
}

Result<std::vector<float>> read_table_row(Model& model, int32_t layer, int32_t token) {
  std::unique_ptr<edit::RowTable> rows = edit::model_rows(engine(model));
  std::vector<float> out(static_cast<size_t>(model.config().intermediate_size));
  STEM_RETURN_IF_ERROR(rows->read_row(layer, token, out.data()));
  return out;
}

Status write_table_row(Model& model, int32_t layer, int32_t token, const std::vector<float>& row) {
  if (static_cast<int64_t>(row.size()) != model.config().intermediate_size)
    return Status::error("table row: " + std::to_string(row.size()) + " values, expected intermediate_size = " +
                         std::to_string(model.config().intermediate_size));
  std::unique_ptr<edit::RowTable> rows = edit::model_rows(engine(model));
  return rows->write_row(layer, token, row.data());
}

float* table_data(Model& model, int32_t layer) {
  const ModelConfig& c = model.config();
  if (layer < 0 || layer >= c.num_hidden_layers || c.ffn_types[layer] != FfnType::Stem) return nullptr;
  model::Transformer& t = engine(model);
  if (t.table_store()) return nullptr;
  Tensor& w = t.weights()[t.layer(layer).i_stem];
  return !w.empty() && w.dtype() == DType::F32 ? w.f32() : nullptr;
}

}  // namespace stem

namespace stem::edit {

Result<SwapPlan> plan_swap(Model& model, const Tokenizer& tok, const std::string& from, const std::string& to,
                           const SwapOptions& opt) {
  std::unique_ptr<RowTable> rows = model_rows(engine(model));
  return plan_swap(tok, model.config(), *rows, from, to, opt);
}

Result<InjectResult> inject_facts(Model& model, const Tokenizer& tok, const std::vector<Fact>& facts,
                                  const std::vector<std::string>& names, const InjectOptions& opt,
                                  const InjectProgress& progress, const std::string& where) {
  STEM_ASSIGN_OR_RETURN(auto seqs, fact_sequences(tok, facts, model.config().max_position_embeddings, where));
  STEM_ASSIGN_OR_RETURN(auto tokens, injection_tokens(tok, facts, seqs, names, where));
  std::vector<Fact> subjects = facts;  // the subject's tokens alone, without the answers'
  for (Fact& f : subjects) f.answer.clear();
  STEM_ASSIGN_OR_RETURN(auto subject_tokens, injection_tokens(tok, subjects, seqs, names, where));
  InjectOptions o = opt;
  STEM_ASSIGN_OR_RETURN(auto keep, keep_for(engine(model), tok, o, tokens, subject_tokens));
  return inject_rows(engine(model), seqs, tokens, o, progress, keep);
}

Result<SwapTrainResult> swap_by_training(Model& model, const Tokenizer& tok, const std::string& from,
                                         const std::string& to, const std::vector<std::string>& prompts,
                                         const SwapTrainOptions& opt, const InjectProgress& progress) {
  return swap_by_training(engine(model), tok, from, to, prompts, opt, progress);
}

Result<EditEvalResult> evaluate_edits(Model& model, const Tokenizer& tok, const EditCases& cases,
                                      const std::vector<Overlay>& edits, const EvalProgress& progress) {
  for (const Overlay& ov : edits) STEM_RETURN_IF_ERROR(check_overlay(ov, model.config(), "edit eval"));
  return evaluate_edits(engine(model), tok, cases, edits, progress);
}

Result<std::vector<float>> stem_rows_of(Model& model, int layer, const std::vector<int32_t>& tokens) {
  const ModelConfig& cfg = model.config();
  if (layer < 0 || layer >= cfg.num_hidden_layers || cfg.ffn_types[layer] != FfnType::Stem)
    return Status::error("stem rows: layer " + std::to_string(layer) + " is not a STEM layer");
  const int64_t f = cfg.intermediate_size;
  std::vector<int32_t> all;
  if (tokens.empty()) {
    all.resize(static_cast<size_t>(cfg.vocab_size));
    for (size_t t = 0; t < all.size(); ++t) all[t] = static_cast<int32_t>(t);
  }
  const std::vector<int32_t>& ids = tokens.empty() ? all : tokens;
  std::unique_ptr<RowTable> rows = model_rows(engine(model));
  std::vector<float> out(ids.size() * static_cast<size_t>(f));
  for (size_t i = 0; i < ids.size(); ++i)
    STEM_RETURN_IF_ERROR(rows->read_row(layer, ids[i], out.data() + i * static_cast<size_t>(f)).with_context("stem rows"));
  return out;
}

std::map<int, std::vector<float>> dense_up_outputs(Model& model, const std::vector<int32_t>& ids, int64_t window,
                                                   int64_t max_positions) {
  return dense_up_outputs(engine(model), ids, window, max_positions);
}

}  // namespace stem::edit
