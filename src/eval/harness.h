// The rules of evaluate_task (include/stem/eval.h) that tests check on their
// own: lm-evaluation-harness's context/continuation split, and which choice
// acc and acc_norm pick. The scoring loop is in harness.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stem/tokenizer.h"

namespace stem::eval {

// Trailing whitespace of the context moves to the front of the continuation;
// the continuation's tokens are those of encode(context + continuation) after
// len(encode(context)); the context is BOS + encode(context).
struct EncodedPair {
  std::vector<int32_t> context, continuation;
};
EncodedPair encode_pair(const Tokenizer& tok, std::string context, std::string continuation);

// Unicode code points of UTF-8 text (what acc_norm divides by).
int64_t code_points(const std::string& s);

// acc: the argmax of the log-likelihoods; acc_norm: the argmax of each divided
// by its choice's length in code points. Ties go to the first.
struct ChoicePicks {
  int pred = 0, pred_norm = 0;
};
ChoicePicks pick_choices(const std::vector<double>& logprobs, const std::vector<std::string>& choices);

}  // namespace stem::eval
