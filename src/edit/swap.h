// Swap edits inside the library: planned against any RowTable (the public
// plan_swap in include/stem/edit.h, where the rules are, reads a model's
// tables through one). Nothing is written into the tables.
#pragma once

#include <string>

#include "edit/overlay.h"
#include "io/tokenizer.h"
#include "stem/edit.h"

namespace stem::edit {

Result<SwapPlan> plan_swap(const Tokenizer& tok, const ModelConfig& cfg, RowTable& rows, const std::string& from,
                           const std::string& to, const SwapOptions& opt);

}  // namespace stem::edit
