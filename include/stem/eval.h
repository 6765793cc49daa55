// Evaluation primitives on a loaded model: the log-likelihood of a
// continuation after a context (lm-evaluation-harness rules: the
// continuation's tokens are those of encode(context + continuation) after the
// tokens of encode(context); the context starts with BOS). Perplexity over a
// data split is `stem eval` for now.
#pragma once

#include <cstdint>
#include <string>

#include "stem/model.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct ContinuationScore {
  int64_t tokens = 0;       // continuation length in tokens
  int64_t chars = 0;        // and in bytes of text (for acc_norm)
  double first_prob = 0;    // p(first token | context)
  int64_t first_rank = 0;   // 1 = the most likely token
  double logprob = 0;       // sum of log p over the continuation's tokens
  bool greedy = false;      // every token is the argmax at its position
};

// Errors: empty continuation, more tokens than the model's positions, BF16
// weight matrices (load F32), a table read error.
Result<ContinuationScore> score_continuation(Model& model, const Tokenizer& tok, const std::string& context,
                                             const std::string& continuation);

}  // namespace stem
