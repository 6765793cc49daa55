// The log-likelihood of a continuation after a context, the primitive of
// multiple-choice and cloze evaluation (and of measuring edits). Rules as in
// lm-evaluation-harness: the context is BOS + encode(context); the
// continuation's tokens are those of encode(context + continuation) after the
// tokens of encode(context) (or encode(continuation) alone when a piece spans
// the boundary); log-probabilities in double from one forward pass. Works on
// every table tier (rows are fetched first when a store serves them).
// It does not batch, cache the context or pick answers (a harness does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "stem/eval.h"
#include "stem/tokenizer.h"

namespace stem::eval {

// The tokens of ctx + s after those of ctx; empty when ctx's are not a prefix.
std::vector<int32_t> after_context(const Tokenizer& tok, const std::string& ctx, const std::string& s);
// after_context, or encode(continuation) alone when that is empty.
std::vector<int32_t> continuation_ids(const Tokenizer& tok, const std::string& context,
                                      const std::string& continuation);
// BOS + encode(context).
std::vector<int32_t> context_ids(const Tokenizer& tok, const std::string& context);
// log(sum exp z) of one logits row, in double.
double log_sum_exp(const float* z, int64_t V);
// log-softmax of one logits row, in double.
std::vector<double> log_softmax(const float* z, int64_t V);

// Errors: empty continuation, more tokens than the model's positions, a table
// read error.
Result<ContinuationScore> score_continuation(model::Transformer& m, const Tokenizer& tok,
                                             const std::string& context, const std::string& continuation);

}  // namespace stem::eval
