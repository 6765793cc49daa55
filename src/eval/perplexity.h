// Perplexity of a model on held-out tokens: the token stream cut into
// non-overlapping windows of T tokens (each predicts its T-1 next tokens; the
// tail that does not fill a window is dropped), windows batched through
// Transformer::forward, or, for BF16 or Q8 weights (which only the decoder
// reads) and with `decode`, one at a time through infer::Decoder. Reports the mean loss, the perplexity, and a standard
// error of the mean loss computed from the per-window means, which are closer
// to independent than single tokens, with the perplexity interval
// exp(mean +- 1.96 SE).
//
// It does not open files: the caller hands a TokenReader (a .tok shard, ids
// from a text file). Ids are validated against the model's vocabulary per
// batch, so a bad id is an error naming its offset, never an abort.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/transformer.h"
#include "stem/eval.h"
#include "stem/status.h"

namespace stem::eval {

// Reads n ids starting at offset into out.
using TokenReader = std::function<void(int64_t offset, int64_t n, int32_t* out)>;

using PerplexityOptions = stem::PerplexityOptions;
using PerplexityResult = stem::PerplexityResult;

// Mean and standard error (sample standard deviation / sqrt(n)) of equally
// weighted values; se is NaN when n < 2.
struct MeanSe {
  double mean = 0.0, se = 0.0;
};
MeanSe mean_and_se(const std::vector<double>& values);

// Fills mean_loss, se, perplexity and the interval of r from per-window means.
void summarize(const std::vector<double>& window_means, PerplexityResult& r);

using PerplexityProgress = stem::PerplexityProgress;

// `n_tokens` ids are readable through `read`. Errors: T outside
// [2, max_position_embeddings], fewer than T tokens, an id outside [0, V).
Result<PerplexityResult> perplexity(model::Transformer& model, const TokenReader& read,
                                    int64_t n_tokens, const PerplexityOptions& opts,
                                    const PerplexityProgress& progress = nullptr);

}  // namespace stem::eval
