// The op table: every kernel of kernels.h and infer_kernels.h that runs on a
// device, as one struct of function pointers a backend fills (its kernels for
// its memory), plus an enum of the same names for Backend::supports(). The
// signatures are those of the CPU implementations declared in those headers;
// a second backend provides functions of the same types (device pointers in,
// device pointers out). Callers hold a `const Ops& k` and write
// `k.linear_forward(...)`: no call site names a backend. Tensors (activations,
// weights, gradients, moments, float arrays) are in the backend's memory;
// what the host computes from token ids for each call (int32 ids, slots and
// targets, document starts and positions, a RowIndex, per-row decay factors,
// the MoE weight-pointer arrays, AdamWHyper) is host memory, which a device
// backend uploads with the call.
//
// Not ops (host helpers, kept as free functions): build_row_index (routing
// and row grouping are decided on the host from token ids), doc_starts and
// doc_positions (document boundaries, likewise), rope_tables (one
// table at construction), gemm_peak_gflops (a CPU measurement), the matvec
// path switches (CPU dispatch), the scratch-size helpers.
#pragma once

#include <cstdint>

#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {

// X(name) for every op, in kernels.h order then infer_kernels.h order (the
// BF16 GEMM pieces last).
#define STEM_KERNEL_OPS(X)                                                                   \
  X(gemm) X(linear_forward) X(linear_backward) X(gather_rows) X(scatter_add_rows)            \
  X(embedding_forward) X(embedding_backward) X(embedding_backward_dense) X(rmsnorm_forward)  \
  X(rmsnorm_backward) X(rope_forward) X(rope_backward) X(attention_forward)                  \
  X(attention_backward) X(swiglu_forward) X(swiglu_backward) X(dense_ffn_forward)            \
  X(dense_ffn_backward) X(stem_ffn_forward) X(stem_ffn_backward) X(hash_moe_forward)         \
  X(hash_moe_backward) X(cross_entropy_forward) X(cross_entropy_backward) X(distill_forward)   \
  X(distill_backward) X(add)                                                                 \
  X(add_inplace) X(adamw_update) X(adamw_update_rows) X(adamw_update_rows_lazy)              \
  X(scale_rows) X(sum_squares) X(scale_inplace) X(attention_cached_forward) X(matvec)        \
  X(attention_cached_slots_forward) X(matvec_bf16) X(matvec_batch) X(matvec_rows) X(matvec_rows_bf16) X(linear_forward_bf16) X(bf16_to_f32_row) X(f32_to_bf16_row) \
  X(gemm_bf16) X(round_to_bf16) X(attention_forward_bf16) X(attention_backward_bf16) \
  X(quantize_q8_row) X(dequantize_q8_row) X(matvec_q8) X(linear_forward_q8)

struct Ops {
#define STEM_OP_FIELD(name) decltype(&kernels::name) name = nullptr;
  STEM_KERNEL_OPS(STEM_OP_FIELD)
#undef STEM_OP_FIELD
};

enum class Op {
#define STEM_OP_ENUM(name) name,
  STEM_KERNEL_OPS(STEM_OP_ENUM)
#undef STEM_OP_ENUM
};
inline constexpr int kOpCount = 0
#define STEM_OP_COUNT(name) +1
    STEM_KERNEL_OPS(STEM_OP_COUNT)
#undef STEM_OP_COUNT
    ;
const char* op_name(Op op);

// The CPU implementations (backends/cpu/), every field set.
const Ops& cpu_ops();

}  // namespace stem::kernels
