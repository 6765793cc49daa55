// The CPU backend: host memory (core::AlignedBuffer), a stream that runs each
// call on the calling thread before returning, events that are complete when
// recorded, and the op table of the kernels in this folder. Every op supports
// F32; the decode matvecs, the prefill linear and the row conversions also
// take BF16 weights (the decode ones Q8 too), and the BF16 GEMM is native
// where the CPU has AVX512-BF16.
#include <cstring>

#include "backends/backend.h"
#include "core/buffer.h"

namespace stem::backends {
namespace {

class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t bytes) : mem_(bytes ? bytes : 1) {}
  Device device() const override { return Device::kCpu; }
  void* data() override { return mem_.data(); }
  size_t size() const override { return mem_.size(); }

 private:
  core::AlignedBuffer mem_;
};

class DoneEvent final : public Event {
 public:
  Status wait() override { return ok_status(); }
};

class HostStream final : public Stream {
 public:
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
  }
  std::shared_ptr<Event> record() override { return std::make_shared<DoneEvent>(); }
  void wait(Event&) override {}
  Status synchronize() override { return ok_status(); }
};

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  Result<std::shared_ptr<Buffer>> alloc(size_t bytes) override {
    return std::shared_ptr<Buffer>(std::make_shared<HostBuffer>(bytes));
  }
  Stream& stream() override { return stream_; }
  std::unique_ptr<Stream> new_stream() override { return std::make_unique<HostStream>(); }
  bool supports(kernels::Op op, DType dtype) const override {
    using kernels::Op;
    switch (dtype) {
      case DType::F32: return true;
      case DType::BF16:
        // Native BF16 products only: oneDNN computes them on any CPU, but
        // without AVX512-BF16 (or AMX) many times slower than F32.
        if (op == Op::gemm_bf16 || op == Op::attention_forward_bf16 || op == Op::attention_backward_bf16)
          return kernels::cpu_has_bf16();
        return op == Op::matvec_bf16 || op == Op::matvec_batch || op == Op::matvec_rows_bf16 ||
               op == Op::linear_forward_bf16 ||
               op == Op::bf16_to_f32_row || op == Op::f32_to_bf16_row || op == Op::round_to_bf16;
      case DType::I32: return false;  // ids are host arrays of every op, not a data dtype
      case DType::Q8:
        return op == Op::matvec_q8 || op == Op::matvec_batch || op == Op::linear_forward_q8 ||
               op == Op::quantize_q8_row || op == Op::dequantize_q8_row;
    }
    return false;
  }
  const kernels::Ops& ops() const override { return kernels::cpu_ops(); }

 private:
  HostStream stream_;  // stateless: shared by every caller
};

}  // namespace

Backend& cpu() {
  static CpuBackend backend;
  return backend;
}

}  // namespace stem::backends

namespace stem::kernels {

const Ops& cpu_ops() {
  static const Ops ops = [] {
    Ops o;
#define STEM_OP_CPU(name) o.name = &kernels::name;
    STEM_KERNEL_OPS(STEM_OP_CPU)
#undef STEM_OP_CPU
    return o;
  }();
  return ops;
}

}  // namespace stem::kernels
