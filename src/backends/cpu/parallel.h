// parallel_for: a loop split statically across OpenMP threads when it is big
// enough, and run with no OpenMP region at all when it is not. Internal to the
// CPU backend.
//
// Why not `#pragma omp parallel for if (cond)`: with libgomp a region whose
// `if` is false still builds a team of one, which measured ~1.4 us a call on
// the 2-vCPU VM of docs/performance.md, as much as the work of a decode
// step's small ops (RMSNorm, RoPE, SwiGLU of one row), which call a dozen such
// kernels per layer. Only the decode-path kernels use this; big-N training
// loops keep their pragmas.
#pragma once

#include <omp.h>

#include <cstdint>

namespace stem::cpu {

// body(i) for i in [0, n), on all threads (static schedule) when `parallel`
// and there is more than one thread to use (not already inside a region).
template <class Body>
inline void parallel_for(int64_t n, bool parallel, const Body& body) {
  if (!parallel || n < 2 || omp_get_max_threads() < 2 || omp_in_parallel()) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace stem::cpu
