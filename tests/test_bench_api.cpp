// The benchmark API (include/stem/bench.h): a training bench and an inference
// bench report consistent figures (tokens/s from the median step or pass, the
// accounting's FLOPs, a table store's traffic), reject bad options with a
// message, and this process's memory is readable. Speed itself is never
// asserted.
#include <gtest/gtest.h>

#include "stem/accounting.h"
#include "stem/bench.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {

ModelConfig bench_config() {
  ModelConfig c = test::two_layer_config(128);
  c.ffn_types = *stem_layout(2, "all");
  return c;
}

TEST(BenchApi, TrainAndInferenceFiguresAreConsistent) {
  const ModelConfig c = bench_config();
  TrainBenchOptions o;
  o.batch = 2;
  o.seq = 16;
  o.steps = 3;
  o.measure_peak = false;
  auto r = bench_train(c, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->step_seconds_all.size(), 3u);
  EXPECT_DOUBLE_EQ(r->tokens_per_second, 32.0 / r->step_seconds);
  EXPECT_DOUBLE_EQ(r->flops_per_token, account(c, 16, 16).train_flops_per_token);
  EXPECT_EQ(r->params, account(c, 16, 16).params_total);
  EXPECT_GT(r->backward_seconds, 0.0);
  EXPECT_EQ(r->mfu, 0.0);  // no peak measured
  o.seq = 65;
  auto bad = bench_train(c, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("exceeds max_position_embeddings = 64"), std::string::npos);

  const std::string dir = (test::scratch() / "bench_api").string();
  {
    auto m = Model::init(c, 3);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(m->save(dir).ok());
  }
  LoadOptions lo;
  lo.tables = TablesIn::Disk;
  auto m = Model::load(dir, lo);
  ASSERT_TRUE(m.ok());
  InferBenchOptions io;
  io.tokens = 20;
  io.reps = 2;
  io.cold = true;
  auto d = bench_infer(*m, io);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->tables, "disk");
  EXPECT_EQ(d->tokens_per_second_all.size(), 2u);
  EXPECT_GT(d->table_reads, 0);  // cold: every pass reads its rows from the file
  EXPECT_EQ(d->rows_requested, 2 * 20);  // one token a step, one STEM layer, two passes
  io.tokens = 65;
  EXPECT_FALSE(bench_infer(*m, io).ok());
  const ProcessMemory pm = process_memory();
  EXPECT_GT(pm.rss_bytes, 0);
  EXPECT_GE(pm.peak_rss_bytes, pm.rss_bytes);
}

}  // namespace
}  // namespace stem
