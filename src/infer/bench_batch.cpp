// bench_batch (include/stem/bench.h): continuous-batching throughput of a
// loaded model through stem::BatchGenerator, without HTTP: each round submits
// S requests of random prompt ids at once and reads their streams on S
// threads, for every S of the list in turn (so the counts are interleaved);
// aggregate generated tokens/s, time to first token and inter-token latency.
//
// It does not start a server or tokenize text; sampling is the caller's
// SamplerConfig (the server's defaults unless told otherwise).
#include <omp.h>

#include <algorithm>
#include <random>
#include <thread>

#include "core/stats.h"
#include "core/timer.h"
#include "stem/batch.h"
#include "stem/bench.h"

namespace stem {
namespace {

using Clock = std::chrono::steady_clock;

struct StreamTimes {
  std::vector<Clock::time_point> tokens;  // arrival of each generated token
  Status error;
};

// Reads a stream to its end, noting when each token arrived.
void drain(BatchStream& stream, StreamTimes* t) {
  BatchEvent ev;
  while (stream.next(&ev)) {
    if (!ev.done)
      t->tokens.push_back(Clock::now());
    else if (!ev.error.ok())
      t->error = ev.error;
  }
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

Result<BatchBenchResult> bench_batch(Model& model, const Tokenizer& tok, const BatchBenchOptions& o,
                                     const BenchProgress& progress) {
  const std::string where = "bench batch: ";
  if (o.streams.empty()) return Status::error(where + "no stream counts given");
  for (int64_t s : o.streams)
    if (s < 1) return Status::error(where + "a stream count of " + std::to_string(s) + ": must be at least 1");
  if (o.tokens < 1 || o.prompt < 1 || o.reps < 1)
    return Status::error(where + "need tokens >= 1, prompt >= 1 and reps >= 1");
  const ModelConfig& cfg = model.config();
  if (o.prompt + o.tokens > cfg.max_position_embeddings)
    return Status::error(where + "prompt + tokens = " + std::to_string(o.prompt + o.tokens) +
                         " exceed max_position_embeddings = " + std::to_string(cfg.max_position_embeddings));
  BatchOptions bopt;
  bopt.slots = *std::max_element(o.streams.begin(), o.streams.end());
  bopt.max_context = o.prompt + o.tokens;
  bopt.step_tokens = std::max<int64_t>(bopt.slots, o.step_tokens);
  bopt.prefetch = o.prefetch;
  STEM_ASSIGN_OR_RETURN(std::unique_ptr<BatchGenerator> gen, BatchGenerator::start(model, tok, bopt));

  BatchBenchResult r;
  r.slots = bopt.slots;
  r.threads = omp_get_max_threads();
  r.points.resize(o.streams.size());
  std::vector<std::vector<double>> ttft(o.streams.size()), itl(o.streams.size());
  std::vector<int64_t> passes(o.streams.size(), 0);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(cfg.vocab_size - 1));
  const int64_t total = static_cast<int64_t>(o.reps + 1) * static_cast<int64_t>(o.streams.size());
  int64_t done = 0;
  for (int rep = 0; rep <= o.reps; ++rep) {  // rep 0: warm-up (every pass shape once)
    for (size_t k = 0; k < o.streams.size(); ++k) {
      const int64_t S = o.streams[k];
      std::vector<std::unique_ptr<BatchStream>> streams;
      std::vector<StreamTimes> times(S);
      const int64_t passes_before = gen->stats().passes;
      const Clock::time_point t0 = Clock::now();
      for (int64_t s = 0; s < S; ++s) {
        BatchRequest req;
        req.prompt_ids.resize(o.prompt);
        for (auto& t : req.prompt_ids) t = id(rng);
        req.gen.sampler = o.sampler;
        req.gen.sampler.seed = o.seed + static_cast<uint64_t>(s);
        req.gen.max_new_tokens = o.tokens;
        req.gen.stop_at_eos = false;
        STEM_ASSIGN_OR_RETURN(std::unique_ptr<BatchStream> st, gen->submit(std::move(req)));
        streams.push_back(std::move(st));
      }
      std::vector<std::thread> readers;
      for (int64_t s = 0; s < S; ++s) readers.emplace_back(drain, std::ref(*streams[s]), &times[s]);
      for (auto& t : readers) t.join();
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      int64_t generated = 0;
      for (const StreamTimes& t : times) {
        STEM_RETURN_IF_ERROR(t.error.with_context(where));
        generated += static_cast<int64_t>(t.tokens.size());
      }
      if (rep > 0) {
        r.points[k].tokens_per_second_all.push_back(static_cast<double>(generated) / seconds);
        passes[k] += gen->stats().passes - passes_before;
        r.points[k].seconds += seconds;
        for (const StreamTimes& t : times) {
          if (t.tokens.empty()) continue;
          ttft[k].push_back(ms(t.tokens.front() - t0));
          for (size_t i = 1; i < t.tokens.size(); ++i) itl[k].push_back(ms(t.tokens[i] - t.tokens[i - 1]));
        }
      }
      if (progress) progress(++done, total, std::to_string(S) + " streams");
    }
  }
  gen->shutdown(false);
  for (size_t k = 0; k < o.streams.size(); ++k) {
    BatchBenchPoint& p = r.points[k];
    p.streams = o.streams[k];
    p.tokens_per_second = core::quantile(p.tokens_per_second_all, 0.5);
    p.ttft_p50_ms = core::quantile(ttft[k], 0.5);
    p.ttft_p99_ms = core::quantile(ttft[k], 0.99);
    p.itl_p50_ms = core::quantile(itl[k], 0.5);
    p.itl_p99_ms = core::quantile(itl[k], 0.99);
    p.pass_ms = passes[k] > 0 ? 1e3 * p.seconds / static_cast<double>(passes[k]) : 0;
    p.speedup = p.tokens_per_second / r.points[0].tokens_per_second;
  }
  return r;
}

}  // namespace stem
