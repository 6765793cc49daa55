// Edit evaluation (see edit_eval.h): the cases file, continuation scores
// from Transformer::forward logits (log-softmax in double), and KL on controls.
#include "edit/edit_eval.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "stem/edit.h"
#include "io/files.h"
#include "io/json_lines.h"

namespace stem::edit {

namespace {

// Next-token log-probabilities after BOS + prompt.
Result<std::vector<double>> next_token(model::Transformer& m, const Tokenizer& tok, const std::string& prompt) {
  const std::vector<int32_t> ids = eval::context_ids(tok, prompt);
  const int64_t T = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  if (T > m.config().max_position_embeddings)
    return Status::error("control '" + prompt + "': " + std::to_string(T) + " tokens exceed max_position_embeddings");
  m.forward(ids.data(), 1, T);
  return eval::log_softmax(m.logits() + (T - 1) * V, V);
}

}  // namespace

Result<EditCases> read_cases(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::vector<io::JsonLine> lines, io::read_json_lines(path));
  EditCases out;
  for (const io::JsonLine& l : lines) {
    if (l.value.contains("control")) {
      STEM_ASSIGN_OR_RETURN(std::string c, io::string_field(l.value, "control", l.where));
      out.controls.push_back(c);
      continue;
    }
    EditCase c;
    c.line = l.line;
    STEM_ASSIGN_OR_RETURN(c.prompt, io::string_field(l.value, "prompt", l.where));
    STEM_ASSIGN_OR_RETURN(c.before, io::string_field(l.value, "before", l.where));
    STEM_ASSIGN_OR_RETURN(c.after, io::string_field(l.value, "after", l.where));
    out.cases.push_back(std::move(c));
  }
  if (out.cases.empty())
    return Status::error(path + ": no cases (expected JSON lines {\"prompt\": ..., \"before\": ..., \"after\": ...})");
  return out;
}

Result<std::vector<std::string>> read_controls(const std::string& path) {
  return io::read_text_lines(path, {"control", "prompt"}, "control prompts");
}

Result<std::vector<std::string>> read_prompts(const std::string& path) {
  return io::read_text_lines(path, {"control", "prompt"}, "prompts");
}

Result<EditEvalResult> evaluate_edits(model::Transformer& m, const Tokenizer& tok, const EditCases& cases,
                                      const std::vector<Overlay>& edits, const EvalProgress& progress) {
  STEM_RETURN_IF_ERROR(TensorListRows(m.weights()).all_resident().with_context("edit eval"));
  const int64_t per_pass = static_cast<int64_t>(cases.cases.size() * 2 + cases.controls.size());
  int64_t done = 0;
  EditEvalResult r;
  r.cases.resize(cases.cases.size());
  r.controls.resize(cases.controls.size());
  std::vector<std::vector<double>> base_next(cases.controls.size());

  // One pass over every case and control; `edited` picks the fields filled.
  auto pass = [&](bool edited) -> Status {
    for (size_t i = 0; i < cases.cases.size(); ++i) {
      const EditCase& c = cases.cases[i];
      const std::string where = "case at line " + std::to_string(c.line);
      STEM_ASSIGN_OR_RETURN(ContinuationScore b, eval::score_continuation(m, tok, c.prompt, c.before));
      STEM_ASSIGN_OR_RETURN(ContinuationScore a, eval::score_continuation(m, tok, c.prompt, c.after));
      (edited ? r.cases[i].before_edit : r.cases[i].before_base) = b;
      (edited ? r.cases[i].after_edit : r.cases[i].after_base) = a;
      if (progress) progress(done += 2, 2 * per_pass);
    }
    for (size_t i = 0; i < cases.controls.size(); ++i) {
      STEM_ASSIGN_OR_RETURN(std::vector<double> lp, next_token(m, tok, cases.controls[i]));
      const auto top = static_cast<int32_t>(std::max_element(lp.begin(), lp.end()) - lp.begin());
      if (!edited) {
        base_next[i] = std::move(lp);
        r.controls[i].top_base = top;
      } else {
        double kl = 0;
        for (size_t v = 0; v < lp.size(); ++v) kl += std::exp(base_next[i][v]) * (base_next[i][v] - lp[v]);
        r.controls[i].kl = std::max(0.0, kl);
        r.controls[i].top_edit = top;
      }
      if (progress) progress(++done, 2 * per_pass);
    }
    return ok_status();
  };

  STEM_RETURN_IF_ERROR(pass(false));
  std::vector<Overlay> undo;
  for (const Overlay& ov : edits) {
    Result<Overlay> prev = apply_overlay(ov, m.weights());
    if (!prev.ok()) {
      (void)revert_overlays(undo, m.weights());
      return prev.status();
    }
    undo.push_back(std::move(*prev));
  }
  Status st = pass(true);
  STEM_RETURN_IF_ERROR(revert_overlays(undo, m.weights()));
  STEM_RETURN_IF_ERROR(st);

  EditEvalSummary& s = r.summary;
  int64_t knows = 0, eff = 0, eff_greedy = 0, kept = 0, same = 0;
  for (const CaseResult& c : r.cases) {
    knows += c.before_base.first_rank == 1;
    eff += c.after_edit.first_rank == 1;
    eff_greedy += c.after_edit.greedy;
    kept += c.before_edit.first_rank == 1;
  }
  const double nc = static_cast<double>(std::max<size_t>(1, r.cases.size()));
  s.base_knows = static_cast<double>(knows) / nc;
  s.efficacy = static_cast<double>(eff) / nc;
  s.efficacy_greedy = static_cast<double>(eff_greedy) / nc;
  s.before_kept = static_cast<double>(kept) / nc;
  double kl_sum = 0;
  for (const ControlResult& c : r.controls) {
    kl_sum += c.kl;
    s.max_kl = std::max(s.max_kl, c.kl);
    same += c.top_base == c.top_edit;
  }
  const double nk = static_cast<double>(std::max<size_t>(1, r.controls.size()));
  s.mean_kl = kl_sum / nk;
  s.controls_same_top = static_cast<double>(same) / nk;
  return r;
}

}  // namespace stem::edit
