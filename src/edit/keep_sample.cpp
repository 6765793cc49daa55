// Keep sentences the unedited model writes itself (see inject.h): sequences
// sampled from BOS at temperature 1 with a fixed seed, each cut after its
// first EOS. An injection without keep sentences of the user's holds the
// model's distributions on those that read a trained row (a KL term), so that
// what it says elsewhere with those rows stays as it was. Sampled 64 at a time
// through the KV-cache decoder's batched passes (infer/decoder.h).
#include <omp.h>

#include <algorithm>

#include "edit/inject.h"
#include "infer/decoder.h"
#include "infer/sampler.h"

namespace stem::edit {
namespace {
constexpr int64_t kSampleLength = 32;
constexpr uint64_t kSampleSeed = 1;
constexpr int64_t kSampleBatch = 64;  // sequences a batched decoder pass takes
}  // namespace

Result<std::vector<std::vector<int32_t>>> sample_keep_sequences(model::Transformer& m, int32_t bos, int32_t eos,
                                                                int64_t n, int64_t max_len, uint64_t seed) {
  const int64_t V = m.config().vocab_size;
  max_len = std::min(max_len, m.config().max_position_embeddings);
  if (n < 1 || max_len < 3) return Status::error("inject: keep samples need n >= 1 and a length >= 3");
  if (bos < 0 || bos >= V || eos < 0 || eos >= V)
    return Status::error("inject: keep samples need the tokenizer's BOS and EOS ids inside the vocabulary");
  const int64_t P = m.config().max_position_embeddings;
  if (n > P) return Status::error("inject: keep samples: " + std::to_string(n) + " at once exceed the model's " +
                                  std::to_string(P) + " positions (a pass takes one token of each)");
  infer::DecoderOptions dopt;
  dopt.max_context = std::max(max_len, n);  // a pass of n tokens fits the chunk
  dopt.slots = n;
  dopt.prefill_chunk = std::max<int64_t>(n, 1);
  dopt.prefetch = false;
  infer::Decoder dec(m, dopt);
  // Passes of one token a sequence are too small to share across threads:
  // on the demo's STEM model, beside another job, 1024 samples took 6.3 s on
  // one thread and 15.5 s on two (OpenMP waits); the caller's count comes
  // back after.
  struct OneThread {
    int before = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(before); }
  } one_thread;
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(n), std::vector<int32_t>{bos});
  std::vector<float> logits(static_cast<size_t>(n * V));
  std::vector<infer::SlotChunk> chunks(static_cast<size_t>(n));
  infer::SamplerOptions so;  // the model's own distribution: no cut
  so.temperature = 1.0f;
  so.top_k = 0;
  so.top_p = 1.0f;
  so.seed = seed;
  infer::Sampler sampler(so, V);
  for (int64_t t = 1; t < max_len; ++t) {
    for (int64_t b = 0; b < n; ++b)
      chunks[b] = infer::SlotChunk{static_cast<int32_t>(b), &seqs[b].back(), 1, logits.data() + b * V, nullptr};
    STEM_RETURN_IF_ERROR(dec.forward_slots(chunks.data(), n).with_context("inject: keep samples"));
    for (int64_t b = 0; b < n; ++b) seqs[b].push_back(sampler.sample(logits.data() + b * V));
  }
  std::vector<std::vector<int32_t>> out;
  for (auto& s : seqs) {
    const auto end = std::find(s.begin() + 1, s.end(), eos);
    if (end != s.end()) s.erase(end + 1, s.end());
    if (s.size() >= 3) out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<std::vector<int32_t>>> keep_for(model::Transformer& m, const Tokenizer& tok, InjectOptions& opt,
                                                   const std::vector<int32_t>& trained,
                                                   const std::vector<int32_t>& edited) {
  if (!opt.keep.empty() || opt.keep_samples <= 0)
    return keep_sequences(tok, opt.keep, m.config().max_position_embeddings);
  auto holds = [](const std::vector<int32_t>& s, const std::vector<int32_t>& ids) {
    return std::any_of(s.begin(), s.end(), [&](int32_t t) { return std::count(ids.begin(), ids.end(), t) > 0; });
  };
  std::vector<std::vector<int32_t>> out;
  for (int64_t done = 0, n = 0; done < opt.keep_samples; done += n) {
    n = std::min({kSampleBatch, opt.keep_samples - done, m.config().max_position_embeddings});
    STEM_ASSIGN_OR_RETURN(auto samples, sample_keep_sequences(m, tok.bos_id(), tok.eos_id(), n, kSampleLength,
                                                              kSampleSeed + static_cast<uint64_t>(done)));
    for (auto& s : samples)
      if (holds(s, trained) && !holds(s, edited)) out.push_back(std::move(s));
  }
  opt.keep_kl = !out.empty();
  return out;
}

}  // namespace stem::edit
