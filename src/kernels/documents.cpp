// Document boundaries inside training windows (kernels.h doc_starts,
// doc_positions): host helpers computed from token ids, which the attention
// and RoPE ops take as [B*T] arrays. No math on activations here.
#include <cstdint>

#include "kernels/kernels.h"

namespace stem::kernels {

void doc_starts(int32_t* out, const int32_t* tokens, int64_t B, int64_t T, int32_t bos,
                int32_t eos) {
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* tok = tokens + b * T;
    int32_t* ds = out + b * T;
    if (T > 0) ds[0] = 0;
    for (int64_t t = 1; t < T; ++t) {
      const bool starts = (bos >= 0 && tok[t] == bos) || (eos >= 0 && tok[t - 1] == eos);
      ds[t] = starts ? static_cast<int32_t>(t) : ds[t - 1];
    }
  }
}

void doc_positions(int32_t* pos, const int32_t* doc_start, int64_t B, int64_t T) {
  for (int64_t n = 0; n < B * T; ++n) pos[n] = static_cast<int32_t>(n % T) - doc_start[n];
}

}  // namespace stem::kernels
