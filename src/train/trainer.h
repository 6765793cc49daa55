// The training loop inside the engine: the public stem::Trainer
// (include/stem/train.h) under the train layer's names.
#pragma once

#include "stem/train.h"

namespace stem::train {
using stem::lr_at;
using stem::StepRecord;
using stem::TableTierStats;
using stem::Trainer;
using stem::TrainOptions;
using StopReason = stem::TrainEnd;
}  // namespace stem::train
