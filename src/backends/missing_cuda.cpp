// Linked when stem is built without its CUDA backend (STEM_CUDA=OFF, the
// default): asking for the device says how to get it instead of failing to
// link or crashing.
#include "backends/backend.h"

namespace stem::backends {

Result<Backend*> cuda_backend() {
  return Status::error(
      "backend cuda: this stem was built without CUDA (configure with -DSTEM_CUDA=ON on a machine with the "
      "CUDA toolkit)");
}

}  // namespace stem::backends
