// The engine behind a public stem::Model: its model::Transformer, for the
// library's own layers (train, infer, eval, edit, bench) and the tests. Not
// installed; the public API never hands out the engine.
#pragma once

#include "model/transformer.h"
#include "stem/model.h"

namespace stem {

model::Transformer& engine(Model& m);
const model::Transformer& engine(const Model& m);

}  // namespace stem
