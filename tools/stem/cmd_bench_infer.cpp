// stem bench decode|prefill: inference speed of a checkpoint, llama-bench's way.
//   decode:  --tokens tokens decoded one at a time from an empty context, full
//            logits each step, random token ids (seeded);
//   prefill: one pass over a --prompt-token prompt.
// Forward passes only, no sampling. One warm-up pass, then --reps timed passes;
// tokens/s is the median over passes, latencies are per token over all timed
// passes. With --cold the page cache of the table file and the row cache are
// dropped before every pass (a cold start). Reports peak RSS, table bytes read,
// row-cache hit rate and the time spent waiting on prefetch.
#include <cstdio>
#include <string>

#include "bench_infer.h"
#include "stem/bench.h"

namespace stem::cli {

int run_bench_infer(const InferBenchOpts& o) {
  const char* cmd = "bench";
  if (o.model_dir.empty()) return fail(cmd, Status::error("--model is required for " + o.mode));
  auto m = Model::load(o.model_dir, o.load.options());
  if (!m.ok()) return fail(cmd, m.status());
  InferBenchOptions bo;
  bo.decode = o.mode == "decode";
  bo.tokens = bo.decode ? o.tokens : o.prompt;
  bo.reps = o.reps;
  bo.cold = o.cold;
  bo.prefetch = !o.load.no_prefetch;
  bo.seed = o.seed;
  Progress bar("bench " + o.mode, o.reps + 1);
  auto r = bench_infer(*m, bo, [&](int64_t done, int64_t, const std::string&) { bar.update(done); });
  bar.finish();
  if (!r.ok()) return fail(cmd, r.status());
  const int64_t n = r->tokens;
  const bool disk = r->tables == "disk";
  nlohmann::json j = {{"mode", o.mode},
                      {"model", o.model_dir},
                      {"tokens", n},
                      {"reps", o.reps},
                      {"cold", o.cold},
                      {"threads", r->threads},
                      {"tokens_per_second", r->tokens_per_second},
                      {"tokens_per_second_all", r->tokens_per_second_all},
                      {"p50_ms", r->p50_ms},
                      {"p99_ms", r->p99_ms},
                      {"peak_rss_bytes", r->peak_rss_bytes},
                      {"rss_after_load_bytes", r->rss_after_load_bytes},
                      {"resident_weight_bytes", r->resident_weight_bytes},
                      {"decoder_bytes", r->decoder_bytes},
                      {"table_store_resident_bytes", r->table_store_resident_bytes},  // at the end
                      {"table_cache_budget_bytes", disk ? o.load.load.table_cache_mb << 20 : 0},
                      {"table_bytes_read", r->table_bytes_read},
                      {"table_reads", r->table_reads},
                      {"cache_hit_rate", r->cache_hit_rate},
                      {"prefetch_wait_ms", r->prefetch_wait_ms},
                      {"fetch_ms", r->fetch_ms},
                      {"decode_weight_bytes_per_token", r->decode_weight_bytes_per_token},
                      {"load", load_flags_json(o.load)}};
  if (o.json) {
    print_json(j);
    return 0;
  }
  std::printf("%s  %s  %ld tokens x %d passes  tables %s%s  %d threads\n", o.mode.c_str(), o.model_dir.c_str(),
              static_cast<long>(n), o.reps, o.load.tables.c_str(), o.cold ? " (cold)" : "", r->threads);
  std::printf("  tokens/s        %.1f (median pass)\n", r->tokens_per_second);
  std::printf("  per token       p50 %.3f ms  p99 %.3f ms\n", r->p50_ms, r->p99_ms);
  // Each figure as it is measured: peak RSS is the process's high-water mark
  // (pages touched, load included); the parts are sizes in use at the end.
  const std::string tables =
      r->tables.empty()      ? ""
      : r->tables == "mmap" ? ", tables mapped: their pages belong to the page cache"
                            : ", tables " + std::string(disk ? "row cache" : "in RAM") + " " +
                                  std::to_string(static_cast<int64_t>(r->table_store_resident_bytes / 1e6 + 0.5)) + " MB";
  std::printf("  peak RSS        %.1f MB (at the end: weights %.1f MB, decoder buffers %.1f MB%s)\n",
              r->peak_rss_bytes / 1e6, r->resident_weight_bytes / 1e6, r->decoder_bytes / 1e6, tables.c_str());
  if (disk)
    std::printf("  tables          %.1f MB read from disk in %ld reads, row-cache hit rate %.1f%% of %ld ids, "
                "prefetch wait %.1f ms, fetch %.1f ms\n",
                r->table_bytes_read / 1e6, static_cast<long>(r->table_reads), 100 * r->cache_hit_rate,
                static_cast<long>(r->rows_requested), r->prefetch_wait_ms, r->fetch_ms);
  else if (!r->tables.empty())
    std::printf("  tables          %.1f MB of rows copied out of the %s (%ld ids), prefetch wait %.1f ms, fetch %.1f ms\n",
                r->table_bytes_read / 1e6, r->tables == "mmap" ? "mapping" : "RAM tables",
                static_cast<long>(r->rows_requested), r->prefetch_wait_ms, r->fetch_ms);
  return 0;
}

int run_bench_batch(const InferBenchOpts& o) {
  const char* cmd = "bench";
  if (o.model_dir.empty()) return fail(cmd, Status::error("--model is required for batch"));
  auto m = Model::load(o.model_dir, o.load.options());
  if (!m.ok()) return fail(cmd, m.status());
  auto tok = Tokenizer::for_model(m->dir(), m->config().vocab_size, "to stream text");  // a run directory: its checkpoint
  if (!tok.ok()) return fail(cmd, tok.status());
  BatchBenchOptions bo;
  bo.streams = o.streams;
  bo.tokens = o.tokens;
  bo.prompt = o.prompt;
  bo.reps = o.reps;
  bo.sampler.greedy = o.greedy;
  bo.prefetch = !o.load.no_prefetch;
  bo.seed = o.seed;
  Progress bar("bench batch", (o.reps + 1) * static_cast<int64_t>(o.streams.size()));
  auto r = bench_batch(*m, *tok, bo, [&](int64_t done, int64_t, const std::string&) { bar.update(done); });
  bar.finish();
  if (!r.ok()) return fail(cmd, r.status());
  if (o.json) {
    nlohmann::json points = nlohmann::json::array();
    for (const BatchBenchPoint& p : r->points)
      points.push_back({{"streams", p.streams},
                        {"tokens_per_second", p.tokens_per_second},
                        {"tokens_per_second_all", p.tokens_per_second_all},
                        {"speedup", p.speedup},
                        {"ttft_p50_ms", p.ttft_p50_ms},
                        {"ttft_p99_ms", p.ttft_p99_ms},
                        {"itl_p50_ms", p.itl_p50_ms},
                        {"itl_p99_ms", p.itl_p99_ms},
                        {"pass_ms", p.pass_ms}});
    print_json({{"mode", "batch"},
                {"model", o.model_dir},
                {"tokens", o.tokens},
                {"prompt", o.prompt},
                {"reps", o.reps},
                {"greedy", o.greedy},
                {"slots", r->slots},
                {"threads", r->threads},
                {"points", points},
                {"load", load_flags_json(o.load)}});
    return 0;
  }
  std::printf("batch  %s  prompt %ld + %ld tokens per request, %d rounds  tables %s  %ld slots  %d threads\n",
              o.model_dir.c_str(), static_cast<long>(o.prompt), static_cast<long>(o.tokens), o.reps,
              o.load.tables.c_str(), static_cast<long>(r->slots), r->threads);
  std::printf("  %7s  %10s  %7s  %9s  %9s  %9s  %9s  %8s\n", "streams", "tokens/s", "x first", "TTFT p50", "TTFT p99",
              "ITL p50", "ITL p99", "pass");
  for (const BatchBenchPoint& p : r->points)
    std::printf("  %7ld  %10.1f  %6.2fx  %7.1fms  %7.1fms  %7.2fms  %7.2fms  %6.2fms\n", static_cast<long>(p.streams),
                p.tokens_per_second, p.speedup, p.ttft_p50_ms, p.ttft_p99_ms, p.itl_p50_ms, p.itl_p99_ms, p.pass_ms);
  return 0;
}

}  // namespace stem::cli
