// Temperature / top-k / top-p sampling (see sampler.h). Candidates are ordered
// by logit (ties by id) with a partial sort when top-k cuts, so the usual case
// (k = 40 of a few thousand) touches the vocabulary once.
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace stem::infer {

Sampler::Sampler(SamplerOptions opts, int64_t vocab_size)
    : opts_(opts), V_(vocab_size), rng_(opts.seed), ids_(vocab_size), probs_(vocab_size) {
  STEM_CHECK(vocab_size >= 1);
}

int32_t Sampler::argmax(const float* logits, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(const float* logits) {
  if (opts_.greedy || opts_.temperature <= 0.0f) return argmax(logits, V_);
  const int64_t k = (opts_.top_k <= 0 || opts_.top_k >= V_) ? V_ : opts_.top_k;
  for (int64_t i = 0; i < V_; ++i) ids_[i] = static_cast<int32_t>(i);
  auto better = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  // Sorted best first: needed for the nucleus cut; for k = V and no cut the
  // order only costs a sort, which keeps one code path.
  if (k < V_ || opts_.top_p < 1.0f)
    std::partial_sort(ids_.begin(), ids_.begin() + k, ids_.end(), better);
  const double inv_t = 1.0 / static_cast<double>(opts_.temperature);
  double mx = logits[ids_[0]];
  for (int64_t i = 1; i < k; ++i) mx = std::max(mx, static_cast<double>(logits[ids_[i]]));
  double total = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    probs_[i] = std::exp((static_cast<double>(logits[ids_[i]]) - mx) * inv_t);
    total += probs_[i];
  }
  int64_t n = k;
  if (opts_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least the best token).
    const double target = static_cast<double>(opts_.top_p) * total;
    double mass = 0.0;
    for (n = 0; n < k;) {
      mass += probs_[n++];
      if (mass >= target) break;
    }
    total = mass;
  }
  const double u = uniform() * total;
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += probs_[i];
    if (u < acc) return ids_[i];
  }
  return ids_[n - 1];  // u rounded up to the total
}

}  // namespace stem::infer
