// stem bench decode|prefill: inference speed of a checkpoint, llama-bench's way.
//   decode:  --tokens tokens decoded one at a time from an empty context, full
//            logits each step, random token ids (seeded);
//   prefill: one pass over a --prompt-token prompt.
// Forward passes only, no sampling. One warm-up pass, then --reps timed passes;
// tokens/s is the median over passes, latencies are per token over all timed
// passes. With --cold the page cache of the table file and the row cache are
// dropped before every pass (a cold start). Reports peak RSS, table bytes read,
// row-cache hit rate and the time spent waiting on prefetch.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <omp.h>

#include "bench_infer.h"
#include "core/timer.h"
#include "infer/decoder.h"
#include "model/accounting.h"
#include "model/transformer.h"

namespace stem::cli {
namespace {

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

}  // namespace

int run_bench_infer(const InferBenchOpts& o) {
  const char* cmd = "bench";
  const bool decode = o.mode == "decode";
  const int64_t n = decode ? o.tokens : o.prompt;
  if (o.model_dir.empty()) return fail(cmd, Status::error("--model is required for " + o.mode));
  if (n < 1 || o.reps < 1) return fail(cmd, Status::error("need --tokens/--prompt >= 1 and --reps >= 1"));
  auto m = Model::load(o.model_dir, o.load.options());
  if (!m.ok()) return fail(cmd, m.status());
  const ModelConfig& cfg = m->config();
  if (n > cfg.max_position_embeddings)
    return fail(cmd, Status::error(std::to_string(n) + " tokens exceed max_position_embeddings = " +
                                   std::to_string(cfg.max_position_embeddings)));
  infer::DecoderOptions dopt;
  dopt.max_context = n;
  dopt.prefetch = !o.load.no_prefetch;
  infer::Decoder dec(m->impl(), dopt);
  memory::TableStore* store = m->impl().table_store();
  const int64_t rss_loaded = proc_status_bytes("VmRSS");

  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<double> pass_tps, token_ms;
  double wait_s = 0, fetch_s = 0;
  memory::StoreStats stats;
  Progress bar("bench " + o.mode, o.reps + 1);
  for (int rep = 0; rep <= o.reps; ++rep) {  // rep 0: warm-up
    const bool timed = rep > 0;
    if (o.cold && store) {
      Status st = store->drop_caches();
      if (!st.ok()) return fail(cmd, st);
    }
    if (store) store->reset_stats();
    if (dec.prefetcher()) dec.prefetcher()->reset_timers();
    dec.reset();
    std::vector<int32_t> ids(n);
    for (auto& t : ids) t = tok(rng);
    core::Timer pass;
    if (decode) {
      for (int64_t i = 0; i < n; ++i) {
        core::Timer t;
        auto r = dec.step(ids[i]);
        if (!r.ok()) return fail(cmd, r.status());
        if (timed) token_ms.push_back(1e3 * t.seconds());
      }
    } else {
      auto r = dec.prefill(ids.data(), n);
      if (!r.ok()) return fail(cmd, r.status());
      if (timed) token_ms.push_back(1e3 * pass.seconds() / static_cast<double>(n));
    }
    const double sec = pass.seconds();
    if (timed) {
      pass_tps.push_back(static_cast<double>(n) / sec);
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
    bar.update(rep + 1);
  }
  bar.finish();

  const double tps = quantile(pass_tps, 0.5);
  const int64_t peak = proc_status_bytes("VmHWM");
  const model::Account acc = model::account(cfg, n, n);
  int64_t weight_bytes = 0;  // resident weights (tables excluded when a store serves them)
  for (size_t i = 0; i < m->impl().weights().size(); ++i) weight_bytes += m->impl().weights()[i].nbytes();
  const std::string tier = o.load.tables;
  nlohmann::json j = {{"mode", o.mode},
                      {"model", o.model_dir},
                      {"tokens", n},
                      {"reps", o.reps},
                      {"cold", o.cold},
                      {"threads", omp_get_max_threads()},
                      {"tokens_per_second", tps},
                      {"tokens_per_second_all", pass_tps},
                      {"p50_ms", quantile(token_ms, 0.5)},
                      {"p99_ms", quantile(token_ms, 0.99)},
                      {"peak_rss_bytes", peak},
                      {"rss_after_load_bytes", rss_loaded},
                      {"resident_weight_bytes", weight_bytes},
                      {"decoder_bytes", dec.memory_bytes()},
                      {"table_store_resident_bytes", store ? store->resident_bytes() : 0},  // at the end
                      {"table_cache_budget_bytes", store && store->tier() == memory::Tier::Disk
                                                       ? o.load.load.table_cache_mb << 20 : 0},
                      {"table_bytes_read", stats.bytes_read},
                      {"table_reads", stats.reads},
                      {"cache_hit_rate", stats.hit_rate()},
                      {"prefetch_wait_ms", 1e3 * wait_s},
                      {"fetch_ms", 1e3 * fetch_s},
                      {"decode_weight_bytes_per_token", acc.decode_weight_bytes},
                      {"load", load_flags_json(o.load)}};
  if (o.json) {
    print_json(j);
    return 0;
  }
  std::printf("%s  %s  %ld tokens x %d passes  tables %s%s  %d threads\n", o.mode.c_str(), o.model_dir.c_str(),
              static_cast<long>(n), o.reps, tier.c_str(), o.cold ? " (cold)" : "", omp_get_max_threads());
  std::printf("  tokens/s        %.1f (median pass)\n", tps);
  std::printf("  per token       p50 %.3f ms  p99 %.3f ms\n", quantile(token_ms, 0.5), quantile(token_ms, 0.99));
  // Each figure as it is measured: peak RSS is the process's high-water mark
  // (pages touched, load included); the parts are sizes in use at the end.
  std::printf("  peak RSS        %.1f MB (at the end: weights %.1f MB, decoder buffers %.1f MB%s)\n", peak / 1e6,
              weight_bytes / 1e6, dec.memory_bytes() / 1e6,
              !store ? ""
              : store->tier() == memory::Tier::Mmap
                  ? ", tables mapped: their pages belong to the page cache"
                  : (", tables " + std::string(store->tier() == memory::Tier::Disk ? "row cache" : "in RAM") + " " +
                     std::to_string(static_cast<int64_t>(store->resident_bytes() / 1e6 + 0.5)) + " MB")
                        .c_str());
  if (store && store->tier() == memory::Tier::Disk)
    std::printf("  tables          %.1f MB read from disk in %ld reads, row-cache hit rate %.1f%% of %ld ids, "
                "prefetch wait %.1f ms, fetch %.1f ms\n",
                stats.bytes_read / 1e6, static_cast<long>(stats.reads), 100 * stats.hit_rate(),
                static_cast<long>(stats.rows_requested), 1e3 * wait_s, 1e3 * fetch_s);
  else if (store)
    std::printf("  tables          %.1f MB of rows copied out of the %s (%ld ids), prefetch wait %.1f ms, fetch %.1f ms\n",
                stats.bytes_read / 1e6, store->tier() == memory::Tier::Mmap ? "mapping" : "RAM tables",
                static_cast<long>(stats.rows_requested), 1e3 * wait_s, 1e3 * fetch_s);
  return 0;
}

}  // namespace stem::cli
