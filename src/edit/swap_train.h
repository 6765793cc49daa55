// Swap by training inside the library, on a model::Transformer (the rules and
// the public entry point are in include/stem/edit.h).
#pragma once

#include <string>
#include <vector>

#include "model/transformer.h"
#include "stem/edit.h"

namespace stem::edit {

// The model's greedy continuation of BOS + encode(prompt), at most max_tokens
// tokens, through the first piece that holds '.', '!', '?' or a newline, as
// text; an error when it is empty.
Result<std::string> greedy_answer(model::Transformer& m, const Tokenizer& tok, const std::string& prompt,
                                  int64_t max_tokens);

Result<SwapTrainResult> swap_by_training(model::Transformer& m, const Tokenizer& tok, const std::string& from,
                                         const std::string& to, const std::vector<std::string>& prompts,
                                         const SwapTrainOptions& opt, const InjectProgress& progress);

}  // namespace stem::edit
