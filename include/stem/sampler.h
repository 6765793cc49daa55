// SamplerConfig: how the next token is picked from a row of logits (see
// stem/generate.h). Plain data.
#pragma once

#include <cstdint>

namespace stem {

// How the next token is picked from a row of logits: greedy (argmax, ties to
// the lowest id), or a draw from softmax(logits / temperature) restricted to
// the top_k tokens and then to the smallest prefix of those whose probability
// reaches top_p. Seeded: a seed gives the same tokens on every platform.
struct SamplerConfig {
  float temperature = 0.8f;  // <= 0 means greedy
  int64_t top_k = 40;        // <= 0 or >= V: no top-k cut
  float top_p = 0.95f;       // >= 1: no nucleus cut; the top token always stays
  bool greedy = false;
  uint64_t seed = 0;
};

}  // namespace stem
