// bench_infer and process_memory (include/stem/bench.h): decode or prefill
// passes of a loaded model through one Decoder, llama-bench's way (random
// token ids, forward passes only, no sampling), with the table store's
// traffic and the prefetcher's waits.
#include <omp.h>

#include <fstream>
#include <random>

#include "core/stats.h"
#include "core/timer.h"
#include "infer/decoder.h"
#include "model/accounting.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/bench.h"

namespace stem {
namespace {

int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}

}  // namespace

ProcessMemory process_memory() { return {proc_status_bytes("VmRSS"), proc_status_bytes("VmHWM")}; }

Result<InferBenchResult> bench_infer(Model& model, const InferBenchOptions& o, const BenchProgress& progress) {
  const int64_t n = o.tokens;
  if (n < 1 || o.reps < 1) return Status::error("bench: need --tokens/--prompt >= 1 and --reps >= 1");
  const ModelConfig& cfg = model.config();
  if (n > cfg.max_position_embeddings)
    return Status::error("bench: " + std::to_string(n) + " tokens exceed max_position_embeddings = " +
                         std::to_string(cfg.max_position_embeddings));
  infer::DecoderOptions dopt;
  dopt.max_context = n;
  dopt.prefetch = o.prefetch;
  infer::Decoder dec(engine(model), dopt);
  memory::TableStore* store = engine(model).table_store();
  InferBenchResult r;
  r.tokens = n;
  r.rss_after_load_bytes = process_memory().rss_bytes;
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<double> token_ms;
  double wait_s = 0, fetch_s = 0;
  memory::StoreStats stats;
  for (int rep = 0; rep <= o.reps; ++rep) {  // rep 0: warm-up
    const bool timed = rep > 0;
    if (o.cold && store) STEM_RETURN_IF_ERROR(store->drop_caches());
    if (store) store->reset_stats();
    if (dec.prefetcher()) dec.prefetcher()->reset_timers();
    dec.reset();
    std::vector<int32_t> ids(n);
    for (auto& t : ids) t = tok(rng);
    core::Timer pass;
    if (o.decode) {
      for (int64_t i = 0; i < n; ++i) {
        core::Timer t;
        STEM_RETURN_IF_ERROR(dec.step(ids[i]).status());
        if (timed) token_ms.push_back(1e3 * t.seconds());
      }
    } else {
      STEM_RETURN_IF_ERROR(dec.prefill(ids.data(), n).status());
      if (timed) token_ms.push_back(1e3 * pass.seconds() / static_cast<double>(n));
    }
    const double sec = pass.seconds();
    if (timed) {
      r.tokens_per_second_all.push_back(static_cast<double>(n) / sec);
      if (store) {
        const memory::StoreStats s = store->stats();
        stats.rows_requested += s.rows_requested;
        stats.cache_hits += s.cache_hits;
        stats.bytes_read += s.bytes_read;
        stats.reads += s.reads;
      }
      if (dec.prefetcher()) {
        wait_s += dec.prefetcher()->wait_seconds();
        fetch_s += dec.prefetcher()->fetch_seconds();
      }
    }
    if (progress) progress(rep + 1, o.reps + 1, "");
  }
  r.tokens_per_second = core::quantile(r.tokens_per_second_all, 0.5);
  r.p50_ms = core::quantile(token_ms, 0.5);
  r.p99_ms = core::quantile(token_ms, 0.99);
  r.peak_rss_bytes = process_memory().peak_rss_bytes;
  for (size_t i = 0; i < engine(model).weights().size(); ++i) r.resident_weight_bytes += engine(model).weights()[i].nbytes();
  r.decoder_bytes = dec.memory_bytes();
  if (store) {
    r.tables = store->tier() == memory::Tier::Ram ? "ram" : store->tier() == memory::Tier::Mmap ? "mmap" : "disk";
    r.table_store_resident_bytes = store->resident_bytes();
  }
  r.table_bytes_read = stats.bytes_read;
  r.table_reads = stats.reads;
  r.rows_requested = stats.rows_requested;
  r.cache_hit_rate = stats.hit_rate();
  r.prefetch_wait_ms = 1e3 * wait_s;
  r.fetch_ms = 1e3 * fetch_s;
  // Bytes of the weights a token reads, in the dtype the matrices were loaded
  // in (the head's stands for all of them; Q8: 36 bytes per 32 weights).
  const model::TensorList& w = engine(model).weights();
  const int head = w.find(cfg.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  const DType mats = head >= 0 && !w[head].empty() ? w[head].dtype() : DType::F32;
  r.decode_weight_bytes_per_token = mats == DType::Q8     ? account(cfg, n, n).decode_weight_bytes * 36.0 / 128.0
                                    : mats == DType::BF16 ? account(cfg, n, n, 2).decode_weight_bytes
                                                          : account(cfg, n, n).decode_weight_bytes;
  r.threads = omp_get_max_threads();
  return r;
}

}  // namespace stem
