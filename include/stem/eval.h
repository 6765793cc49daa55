// Evaluation on a loaded model: perplexity over held-out tokens, and the
// log-likelihood of a continuation after a context (lm-evaluation-harness
// rules: the continuation's tokens are those of encode(context +
// continuation) after the tokens of encode(context); the context starts with
// BOS).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "stem/model.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct PerplexityOptions {
  int64_t seq = 512;       // T, tokens per window (2 <= T <= max_position_embeddings)
  int64_t batch = 4;       // windows per forward
  int64_t max_tokens = 0;  // use at most this many tokens of the stream (0: all)
};

// The token stream is cut into non-overlapping windows of T tokens (each
// predicts its T-1 next tokens; a tail that does not fill a window is
// dropped). The standard error is that of the per-window mean losses, which
// are closer to independent than single tokens.
struct PerplexityResult {
  std::string data;            // what was evaluated (the shard or file path)
  int64_t windows = 0;
  int64_t seq = 0;
  int64_t tokens_used = 0;     // windows * seq
  int64_t tokens_dropped = 0;  // tail (and beyond max_tokens) not evaluated
  int64_t predicted = 0;       // windows * (seq - 1)
  double mean_loss = 0.0;      // nats per predicted token
  double se = 0.0;             // standard error of mean_loss; NaN with one window
  double perplexity = 0.0;     // exp(mean_loss)
  double ppl_low = 0.0, ppl_high = 0.0;  // exp(mean_loss -+ 1.96 se); NaN with one window
  double seconds = 0.0;
};

// Called after each batch with (windows done, windows total, running mean loss).
using PerplexityProgress = std::function<void(int64_t done, int64_t total, double mean_loss)>;

// Perplexity of `model` on `data`: a data directory (`stem prepare`; its
// held-out split val.tok), one .tok shard, or a text file of whitespace-
// separated ids. Errors name the path: not found, a vocabulary that is not the
// model's, fewer than T tokens, T outside [2, max_position_embeddings], an id
// outside [0, V), a table read error.
Result<PerplexityResult> evaluate_perplexity(Model& model, const std::string& data, const PerplexityOptions& opt,
                                             const PerplexityProgress& progress = nullptr);

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
