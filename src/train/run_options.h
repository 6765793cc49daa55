// What a training run's options mean beyond the loop itself: the two
// parameter groups' learning rates at a step (backbone and STEM tables, the
// backbone frozen first if asked), the options a resume must repeat (saved in
// trainer_state.json and compared on resume), and a run's starting weights
// taken from another checkpoint (--init-from). It does not run anything.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "model/weights.h"
#include "stem/status.h"
#include "stem/train.h"

namespace stem::train {

// The STEM tables' group with its unset fields (NaN, -1) filled from the backbone's.
TrainOptions resolve_groups(TrainOptions o);

// The first option (o resolved) outside its range, named with its value and
// the range: "train: --lr-tables = -1 (need > 0)".
Status check_option_ranges(const TrainOptions& o);

struct GroupRates {
  float backbone = 0, tables = 0;
};
// Learning rates of 1-based step t (o resolved): the tables on their own
// warm-up and cosine over all steps; the backbone 0 for the first
// freeze_backbone_steps, then its warm-up and cosine over the steps after.
GroupRates group_rates(const TrainOptions& o, int64_t t);

// The options that decide a run's numbers step by step (o resolved), as saved
// in trainer_state.json.
nlohmann::json run_options_json(const TrainOptions& o);
// A resume whose options differ from those saved is an error naming the
// field and both values (an older checkpoint without them: nothing to check).
Status check_resume_options(const nlohmann::json& saved, const nlohmann::json& now, const std::string& ckpt);

// Copies the weights of the checkpoint at `dir` (a model or run directory)
// into w: every tensor by name, shapes equal. The two configs may differ in
// what has no tensor (rope_theta, max positions).
Status load_initial_weights(const std::string& dir, model::TensorList& w);

}  // namespace stem::train
