// Which backends exist: the CPU one always, the others when built and their
// device is present; op names for messages.
#include "backends/backend.h"
#include "core/check.h"

namespace stem::backends {

Result<Backend*> get(Device device) {
  switch (device) {
    case Device::kCpu: return &cpu();
    case Device::kCuda: return cuda_backend();
  }
  return Status::error("backend: unknown device");
}

std::vector<Backend*> available() {
  std::vector<Backend*> out{&cpu()};
  if (auto cuda = cuda_backend(); cuda.ok()) out.push_back(*cuda);
  return out;
}

std::shared_ptr<Buffer> must_alloc(Backend& be, size_t bytes) {
  auto buf = be.alloc(bytes);
  STEM_CHECKF(buf.ok(), "%s backend: allocating %zu bytes: %s", be.name(), bytes, buf.status().message().c_str());
  return std::move(*buf);
}

}  // namespace stem::backends

namespace stem::kernels {

const char* op_name(Op op) {
  static const char* const kNames[] = {
#define STEM_OP_NAME(name) #name,
      STEM_KERNEL_OPS(STEM_OP_NAME)
#undef STEM_OP_NAME
  };
  const int i = static_cast<int>(op);
  return i >= 0 && i < kOpCount ? kNames[i] : "?";
}

}  // namespace stem::kernels
