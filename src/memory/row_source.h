// RowSource: anything that copies rows of M same-shaped tables out by id, the
// one thing the Prefetcher needs. A TableStore (read-only tiers for inference)
// and a RowFile (the read-write file the trainer keeps its tables in) are both
// row sources. It knows nothing of models.
#pragma once

#include <cstdint>

#include "stem/status.h"

namespace stem::memory {

class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual int64_t n_tables() const = 0;  // M
  virtual int64_t cols() const = 0;      // floats per row
  // Copies row ids[i] of every table t into dst[t] + i * cols() as F32 (i < n).
  virtual Status fetch(const int32_t* ids, int64_t n, float* const* dst) = 0;
};

}  // namespace stem::memory
