// Measuring an edit: for prompts with an expected continuation before and
// after the edit, the probability and rank of each continuation's first
// token and the log-probability of the whole continuation, on the model
// without and with the edit; and locality: the KL divergence between the two
// models' next-token distributions on unrelated control prompts.
//
// The edits are applied to the model for the second pass and reverted after
// it (bit for bit; also on error), so the model is unchanged on return. The
// STEM tables must be in the weight list (RAM, F32), else an error.
// Prompts are BOS + encode(prompt); a continuation's ids are those that
// follow the prompt's in encode(prompt + continuation) (targets.h), so a
// continuation normally starts with a space: " Dunemot".
//
// Cases file (JSON lines; blank lines skipped), either kind of line:
//   {"prompt": "The capital of Kavoria is", "before": " Dunemot", "after": " Lisbon"}
//   {"control": "The people of Romania speak"}
// Controls file (--controls): one prompt per line, or such JSON lines.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "edit/overlay.h"
#include "eval/continuation.h"
#include "io/tokenizer.h"
#include "model/transformer.h"

namespace stem::edit {

struct EditCase {
  std::string prompt, before, after;
  int64_t line = 0;
};

struct EditCases {
  std::vector<EditCase> cases;
  std::vector<std::string> controls;
};

// Errors name the file, line and field.
Result<EditCases> read_cases(const std::string& path);
Result<std::vector<std::string>> read_controls(const std::string& path);

using ContinuationScore = stem::ContinuationScore;  // eval/continuation.h

struct CaseResult {
  ContinuationScore before_base, before_edit, after_base, after_edit;
};

struct ControlResult {
  double kl = 0;  // KL(base || edited) of the next-token distribution, nats
  int32_t top_base = 0, top_edit = 0;
};

struct EditEvalSummary {
  double base_knows = 0;     // cases whose "before" first token is top-1 without the edit
  double efficacy = 0;       // cases whose "after" first token is top-1 with the edit
  double efficacy_greedy = 0;  // ... and the whole "after" continuation is greedy
  double before_kept = 0;    // cases whose "before" first token is still top-1 with the edit
  double mean_kl = 0, max_kl = 0;
  double controls_same_top = 0;  // controls whose top-1 token is unchanged
};

struct EditEvalResult {
  std::vector<CaseResult> cases;
  std::vector<ControlResult> controls;
  EditEvalSummary summary;
};

// Continuations are scored by eval::score_continuation.

// (done, total) over the prompts scored, both passes.
using EvalProgress = std::function<void(int64_t, int64_t)>;

// Each overlay must already fit the model (check_overlay).
Result<EditEvalResult> evaluate_edits(model::Transformer& m, const io::Tokenizer& tok, const EditCases& cases,
                                      const std::vector<Overlay>& edits, const EvalProgress& progress = nullptr);

}  // namespace stem::edit
