// Sampler: picks the next token from a row of logits: greedy (argmax), or a
// draw from softmax(logits / temperature) restricted to the top-k tokens and
// then to the smallest prefix of those (by probability) whose mass reaches
// top-p. Seeded std::mt19937_64, and the draw is turned into a double by hand,
// so a seed gives the same tokens on every platform.
//
// It does not look at history (no repetition penalty) and does not own logits.
// Buffers are sized for the vocabulary once; sample() allocates nothing.
// Not thread-safe (one generator).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "stem/sampler.h"

namespace stem::infer {

// The options are the public stem::SamplerConfig.
using SamplerOptions = SamplerConfig;

class Sampler {
 public:
  Sampler(SamplerOptions opts, int64_t vocab_size);

  // The chosen id in [0, V). Ties in greedy go to the lowest id.
  int32_t sample(const float* logits);
  const SamplerOptions& options() const { return opts_; }

  static int32_t argmax(const float* logits, int64_t V);

 private:
  double uniform();  // [0, 1), 53 random bits

  SamplerOptions opts_;
  int64_t V_;
  std::mt19937_64 rng_;
  std::vector<int32_t> ids_;    // [V] candidate ids, best first after sample()
  std::vector<double> probs_;   // [V] their probabilities
};

}  // namespace stem::infer
