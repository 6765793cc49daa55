// Where a checkpoint's STEM tables are, for a memory::TableStore: the tables of
// the STEM layers (in layer order) inside model.safetensors (table-major), or
// in the optional row-major pack `tables.stem` beside it, written by
// `stem convert --pack-tables`, in which one token's rows of every STEM layer
// are one contiguous range ([V][L_stem][f]): one read per token on disk.
//
// tables.stem format (little-endian), version 1:
//   bytes 0..7    magic "STEMTBL\0"
//   u32 version, u32 dtype (0 = F32, 1 = BF16, 2 = Q8: each row in blocks of
//     32 values, an F32 scale then 32 int8, as tensor.h's Q8)
//   i64 V, i64 n_stem_layers, i64 f
//   u64 size of model.safetensors it was packed from, i64 its mtime (ns)
//   zero padding to byte 4096, then the rows [V][n_stem][f].
// A pack whose shape, dtype or source file does not match is an error (a stale
// pack must never serve rows silently).
// It does not decide tiers or prefetching; callers (CLI, decoder) do.
#pragma once

#include <string>

#include "memory/table_store.h"
#include "stem/config.h"
#include "stem/status.h"

namespace stem::model {

inline constexpr const char* kPackedTablesFile = "tables.stem";

// The tables of model_dir/model.safetensors; with `packed`, those of
// model_dir/tables.stem instead (an error if it is absent or stale).
Result<memory::TableFileLayout> checkpoint_tables(const ModelConfig& cfg, const std::string& model_dir,
                                                  bool packed);
// True when model_dir holds a tables.stem (valid or not).
bool has_packed_tables(const std::string& model_dir);
// Writes model_dir/tables.stem from model.safetensors (atomically), in the
// checkpoint's table dtype, or with `q8` quantized to 8 bits (a row of f
// values in ceil(f / 32) * 36 bytes: 28% of F32, 56% of BF16).
Status pack_tables(const ModelConfig& cfg, const std::string& model_dir, bool q8 = false);

}  // namespace stem::model
