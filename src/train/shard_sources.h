// Where a rank's shards start when training runs on several processes: its
// rows of the STEM tables (ShardedTables) and its parts of the backbone's
// AdamW moments (ShardedMoments, --zero 1), read from the checkpoint it
// resumes or the model it starts from, or drawn from the seeded
// initialisation, a block at a time, so that no rank ever holds a whole
// table or all the moments. It knows files and tensor lists, not the loop.
#pragma once

#include <string>

#include "model/transformer.h"
#include "train/adamw.h"
#include "train/sharded_moments.h"
#include "train/sharded_tables.h"

namespace stem::train {

// The checkpoint it resumes (the optimizer's own rows of lazy tables when
// saved, else the model's), the model of --init-from (fresh moments), or
// the seeded initialisation (ckpt and init_dir empty).
ShardedTables::RowSource table_rows_source(const std::string& ckpt, const std::string& init_dir, uint64_t seed,
                                           const model::Transformer& tr, const AdamW& adam);
// The checkpoint it resumes, else zeros (ckpt empty).
ShardedMoments::MomentSource moment_source(const std::string& ckpt, const model::TensorList& w);

}  // namespace stem::train
