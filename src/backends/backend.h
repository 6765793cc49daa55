// The seam between the engine and the devices it computes on, after
// ggml-backend: a Backend allocates Buffers in its device's memory, runs the
// kernels of its op table (kernels/ops.h) in order on a Stream, and records
// Events that the host or another stream waits on. The model, the trainer and
// the decoder hold a Backend and reach the device through it alone: its ops
// for math, alloc() for arenas, the stream for copies and clears. A backend
// is a sibling folder (backends/cpu/, backends/cuda/) plus a CMake option; a
// backend that is not built links a stub that says so (missing_cuda.cpp), so
// no code outside backends/ carries an #ifdef. docs/architecture.md has the
// checklist for adding one.
//
// What it does not do: decide what runs where (the model and the memory
// tiers do), or know shapes (tensor/).
//
// Errors: alloc(), Stream::synchronize() and Event::wait() return a Status;
// work that fails asynchronously reports to whoever waits, never by exiting
// on a worker. Threading: a Backend is shared (process-wide, thread-safe to
// call); a Stream is used by one thread at a time. The CPU backend's default
// stream runs each call on the calling thread before it returns, so its
// events are complete when recorded; its kernels use OpenMP inside.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "stem/status.h"
#include "tensor/tensor.h"

namespace stem::backends {

// An allocation in a device's memory, zero-filled, 64-byte aligned. Host
// buffers are committed as they are first written (large ones are anonymous
// mappings), so a budget never filled costs address space only.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual Device device() const = 0;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
};

// A point in a stream's work.
class Event {
 public:
  virtual ~Event() = default;
  // Blocks the host until the work recorded before the event is done; that
  // work's error, if it failed.
  virtual Status wait() = 0;
};

// A queue of work on one device; work enqueued on one stream runs in order.
class Stream {
 public:
  virtual ~Stream() = default;
  // dst and src in this backend's memory or the host's (the backend says
  // which host memory copies asynchronously); they must not overlap.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  virtual std::shared_ptr<Event> record() = 0;
  // Work enqueued on this stream after the call waits for `e`.
  virtual void wait(Event& e) = 0;
  // Blocks until every enqueued piece of work is done; the first error.
  virtual Status synchronize() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  virtual Result<std::shared_ptr<Buffer>> alloc(size_t bytes) = 0;
  // The stream the ops run on, and new ones (a copy stream beside it).
  virtual Stream& stream() = 0;
  virtual std::unique_ptr<Stream> new_stream() = 0;
  // Whether `op` runs here with weights (or data) of `dtype`; callers ask
  // before they choose a path, and a missing op is a Status, not a crash.
  virtual bool supports(kernels::Op op, DType dtype) const = 0;
  virtual const kernels::Ops& ops() const = 0;
};

// The host backend, always there.
Backend& cpu();
// The backend of a device: cpu() for Device::kCpu; for another device, its
// backend when stem was built with it and the device is present, else a
// Status that says which of the two is missing.
Result<Backend*> get(Device device);
// cpu() first, then every other backend that get() returns: what the
// backend-parameterized tests run on.
std::vector<Backend*> available();

// An allocation that must succeed (arenas sized by the model itself): a
// failure is reported through STEM_CHECK with the backend and the size.
std::shared_ptr<Buffer> must_alloc(Backend& be, size_t bytes);

// Implemented by backends/cuda/ when built (STEM_CUDA=ON), else by the stub.
Result<Backend*> cuda_backend();

}  // namespace stem::backends
