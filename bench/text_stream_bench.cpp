// Micro-benchmark of incremental detokenization (stem::TextStream, what
// generate() and the server stream with): the time to push 256 generated ids
// after a context of 0, 1000 and 4000 ids. Each push decodes a window of a
// few ids, so the time per id should not grow with the context. The
// tokenizer is the committed seed of the tokenizer fuzzer (a 400-piece BPE
// with byte fallback); the ids are random, made once outside the timed loop.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "stem/generate.h"
#include "stem/tokenizer.h"

namespace {

void BM_text_stream_push(benchmark::State& state) {
  auto tok = stem::Tokenizer::load(STEM_SOURCE_DIR "/tests/fuzz/tokenizer/tokenizer.model");
  if (!tok.ok()) {
    state.SkipWithError(tok.status().message().c_str());
    return;
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(tok->vocab_size() - 1));
  std::vector<int32_t> context(static_cast<size_t>(state.range(0))), gen(256);
  for (auto& id : context) id = any(rng);
  for (auto& id : gen) id = any(rng);
  for (auto _ : state) {
    stem::TextStream st(*tok, context);
    size_t bytes = 0;
    for (int32_t id : gen) bytes += st.push(id).size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(gen.size()));
}
BENCHMARK(BM_text_stream_push)->Arg(0)->Arg(1000)->Arg(4000)->Unit(benchmark::kMillisecond);

}  // namespace
