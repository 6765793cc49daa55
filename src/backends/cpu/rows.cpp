// Row grouping, gathers and scatter-adds (embedding and STEM table rows).
// The scatter-add is race-free without atomics: each thread owns whole
// destination rows, walking the positions of its rows in CSR order.
#include <algorithm>
#include <cstring>
#include <utility>

#include "backends/cpu/parallel.h"
#include "core/check.h"
#include "core/simd.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

STEM_SIMD void add_row(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t C) {
  for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
}

// base[row_of(u), :] += the rows of dsrc at the positions of slot u.
template <class RowOf>
void scatter_add(float* base, const float* dsrc, const RowIndex& index, int64_t C, const RowOf& row_of) {
  const int64_t U = index.n_unique();
#pragma omp parallel for schedule(dynamic, 16) if (U * C > 32768)
  for (int64_t u = 0; u < U; ++u) {
    float* dst = base + row_of(u) * C;
    for (int32_t k = index.offsets[u]; k < index.offsets[u + 1]; ++k)
      add_row(dst, dsrc + static_cast<int64_t>(index.order[k]) * C, C);
  }
}

}  // namespace

RowIndex build_row_index(const int32_t* keys, int64_t N, int64_t K) {
  RowIndex idx;
  std::vector<std::pair<int32_t, int32_t>> kp(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    STEM_CHECKF(keys[n] >= 0 && keys[n] < K, "key %d at position %ld outside [0, %ld)", keys[n],
                static_cast<long>(n), static_cast<long>(K));
    kp[n] = {keys[n], static_cast<int32_t>(n)};
  }
  std::sort(kp.begin(), kp.end());
  idx.slot.resize(N);
  idx.order.resize(N);
  idx.offsets.push_back(0);
  for (int64_t i = 0; i < N; ++i) {
    if (i == 0 || kp[i].first != kp[i - 1].first) {
      if (i) idx.offsets.push_back(static_cast<int32_t>(i));
      idx.unique.push_back(kp[i].first);
    }
    idx.order[i] = kp[i].second;
    idx.slot[kp[i].second] = static_cast<int32_t>(idx.unique.size() - 1);
  }
  idx.offsets.push_back(static_cast<int32_t>(N));
  if (N == 0) idx.offsets.assign(1, 0);
  return idx;
}

void gather_rows(float* out, const float* rows, const int32_t* row_of, int64_t N, int64_t C) {
  cpu::parallel_for(N, N * C > 32768, [&](int64_t n) {
    std::memcpy(out + n * C, rows + static_cast<int64_t>(row_of[n]) * C, C * sizeof(float));
  });
}

void scatter_add_rows(float* drows, const float* dsrc, const RowIndex& index, int64_t C) {
  scatter_add(drows, dsrc, index, C, [&](int64_t u) { return index.dest.empty() ? u : int64_t{index.dest[u]}; });
}

void embedding_forward(float* h, const float* table, const int32_t* ids, int64_t N, int64_t d) {
  gather_rows(h, table, ids, N, d);
}

void embedding_backward(float* drows, const float* dh, const RowIndex& index, int64_t d) {
  scatter_add_rows(drows, dh, index, d);
}

void embedding_backward_dense(float* dtable, const float* dh, const RowIndex& index, int64_t d) {
  scatter_add(dtable, dh, index, d, [&](int64_t u) { return int64_t{index.unique[u]}; });
}

}  // namespace stem::kernels
