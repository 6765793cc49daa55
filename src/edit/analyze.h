// The table analyses of include/stem/analyze.h on the engine: W_up x
// collected through a model::Transformer's layer observer (one forward pass
// per window, the model's own).
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/transformer.h"
#include "stem/analyze.h"

namespace stem::edit {

// W_up x of every dense layer (see stem/analyze.h).
std::map<int, std::vector<float>> dense_up_outputs(model::Transformer& m, const std::vector<int32_t>& ids,
                                                   int64_t window, int64_t max_positions);

}  // namespace stem::edit
