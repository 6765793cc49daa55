// Training checkpoints. A run directory holds
//   checkpoints/step-00000100/   a model directory in the contract's format
//                                (config.json, model.safetensors, tokenizer.model)
//                                plus optimizer.safetensors and trainer_state.json
//   latest                       the name of the newest complete checkpoint
//   metrics.jsonl
// A checkpoint is written into a hidden temporary directory, every file fsynced,
// then renamed into place; `latest` is replaced atomically after that, and only
// then are old checkpoints pruned (renamed to a hidden name first, then
// deleted). A crash at any moment leaves every named checkpoint whole; stray
// temporaries are removed on the next start.
// trainer_state.json carries a format name and version, checked on load.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "stem/status.h"
#include "train/adamw.h"

namespace stem::train {

struct TrainerState {
  int64_t step = 0;           // completed optimizer steps
  int64_t tokens = 0;         // tokens trained on
  std::string data_rng;       // std::mt19937_64 state, as text
  double last_val_loss = 0;   // NaN-free; 0 if none yet
  nlohmann::json options;     // the options a resume must repeat (null in older checkpoints)
};

// Tensors kept outside memory (the trainer's disk tier): tensor i, empty in
// the weights and the moments, is streamed by stream(i, kind, sink) with kind
// 0 for the weights as the model has them (lazy decay applied), 1 the first
// moment, 2 the second, 3 the weights as the optimizer keeps them.
//
// Lazy AdamW tables (optimizer.safetensors version 2): model.safetensors holds
// each row with the decay it owes applied (the model as it is now), while
// optimizer.safetensors keeps the optimizer's own state, unchanged by the
// save: the weights ("p.NAME"), moments and last step of every row. Resume
// reads that state, so a run saved at any step goes on bit for bit as if it
// had never stopped. Version 1 files (flushed in place before saving) load as
// before.
using StateStream = std::function<Status(size_t i, int kind, const io::ByteSink& sink)>;

// Writes RUN/checkpoints/step-NNNNNNNN and points RUN/latest at it; keeps the
// newest `keep` checkpoints (0 keeps all).
Status save_checkpoint(const std::string& run_dir, const ModelConfig& cfg,
                       const model::TensorList& weights, const std::string& tokenizer_path,
                       const AdamW& opt, const TrainerState& st, int keep,
                       const StateStream& stream = nullptr);

// The newest complete checkpoint of RUN ("" if none); removes stray temporaries.
Result<std::string> latest_checkpoint(const std::string& run_dir);

// Restores weights (which must match cfg), optimizer state and trainer state.
Status load_checkpoint(const std::string& ckpt_dir, const ModelConfig& cfg,
                       model::TensorList& weights, AdamW& opt, TrainerState& st);

}  // namespace stem::train
