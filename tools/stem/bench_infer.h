// Options of `stem bench decode|prefill|batch` (cmd_bench_infer.cpp), registered by
// cmd_bench.cpp beside the training benchmarks.
#pragma once

#include <string>
#include <vector>

#include "commands.h"

namespace stem::cli {

struct InferBenchOpts {
  std::string mode, model_dir;  // mode: decode | prefill | batch
  int64_t tokens = 128;         // decode: tokens decoded from an empty context
  int64_t prompt = 512;         // prefill: prompt length
  int reps = 5;                 // timed passes after one warm-up pass
  std::vector<int64_t> streams = {1, 8};  // batch: concurrent requests, each count in turn
  bool greedy = false;                    // batch: greedy instead of the server's default sampler
  bool cold = false;            // drop the table file's page cache and the row cache before each pass
  uint64_t seed = 0;
  bool json = false;
  LoadFlags load;
};

int run_bench_infer(const InferBenchOpts& o);
int run_bench_batch(const InferBenchOpts& o);

}  // namespace stem::cli
