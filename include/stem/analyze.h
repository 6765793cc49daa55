// Analyses of what STEM tables hold, after the STEM paper's figures:
//   spread    pairwise cosine statistics of a set of vectors (STEM rows of a
//             layer, or the dense up-projection outputs W_up x of a dense layer
//             collected on text): a larger angular spread (mean |cos| near 0)
//             means more nearly orthogonal addresses, more room for facts.
//   capacity  distinct STEM parameters a context activates (distinct tokens x
//             f x STEM layers) as it grows: a dense FFN touches the same
//             d x f up-projection whatever the context; STEM touches more rows.
// It does not plot, and reads the model without changing it.
//
// Dense inputs come from the model's own forward pass, through its layer
// observer.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "stem/config.h"
#include "stem/model.h"
#include "stem/status.h"

namespace stem::edit {

struct CosineStats {
  int64_t vectors = 0;      // non-zero vectors compared
  int64_t pairs = 0;        // pairs measured
  bool sampled = false;     // pairs drawn at random (else every pair)
  double mean_cos = 0, mean_abs_cos = 0, p95_abs_cos = 0;
  std::vector<int64_t> histogram;  // cos over [-1, 1] in equal bins
};

// Over n vectors of `dim` floats (row-major): every pair when there are at
// most max_pairs of them, else max_pairs distinct-index pairs drawn with
// `seed`. Zero vectors are left out (no angle).
CosineStats cosine_stats(const float* vectors, int64_t n, int64_t dim, int64_t max_pairs, uint64_t seed,
                         int bins = 20);

// The rows of STEM layer `layer` for `tokens` (every row when empty), [n, f],
// wherever the tables live. Errors: not a STEM layer, a token out of range.
Result<std::vector<float>> stem_rows_of(Model& model, int layer, const std::vector<int32_t>& tokens);

// W_up x of every dense layer at up to max_positions positions of `ids`, read
// in windows of `window` tokens: layer -> [n, f]. Empty when there are no
// dense layers. One forward pass per window (the model's own, observed);
// the model's F32 tables in RAM or its table store serve the STEM rows.
std::map<int, std::vector<float>> dense_up_outputs(Model& model, const std::vector<int32_t>& ids, int64_t window,
                                                   int64_t max_positions);

struct CapacityPoint {
  int64_t context = 0;           // tokens of context
  double distinct_tokens = 0;    // mean over windows
  double stem_params = 0;        // distinct_tokens x f x STEM layers
  double table_fraction = 0;     // of all STEM table parameters
};

// At contexts 1, 2, 4, ... up to max_context (and the data's length), each
// averaged over `windows` windows spread evenly over `ids`. Errors: no STEM
// layers, fewer ids than a context of 1.
Result<std::vector<CapacityPoint>> capacity_curve(const ModelConfig& cfg, const std::vector<int32_t>& ids,
                                                  int64_t max_context, int64_t windows);

}  // namespace stem::edit
