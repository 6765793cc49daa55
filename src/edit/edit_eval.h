// Measuring edits on the engine (the rules, the file formats and the public
// entry point are in include/stem/edit.h): continuations are scored by
// eval::score_continuation, the edits applied to the weight list for the
// second pass and reverted after it (also on error).
#pragma once

#include <vector>

#include "edit/overlay.h"
#include "eval/continuation.h"
#include "io/tokenizer.h"
#include "model/transformer.h"
#include "stem/edit.h"

namespace stem::edit {

// Each overlay must already fit the model (check_overlay). The STEM tables
// must be in the weight list (RAM, F32), else an error.
Result<EditEvalResult> evaluate_edits(model::Transformer& m, const Tokenizer& tok, const EditCases& cases,
                                      const std::vector<Overlay>& edits, const EvalProgress& progress = nullptr);

}  // namespace stem::edit
