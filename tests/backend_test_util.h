// The fixture of the backend-parameterized op tests (test_backend_ops*.cpp):
// BackendOps runs on every backend of backends::available() (instantiated once,
// in test_backend_ops.cpp), with DeviceArrays to move float arrays into the
// backend's memory and back through its stream.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "kernel_test_util.h"

namespace stem::test {

constexpr double kTol = 1e-5;  // float op against the double reference, relative to max |want|

// Arrays in a backend's memory, kept alive for the test's duration.
class DeviceArrays {
 public:
  explicit DeviceArrays(backends::Backend& be) : be_(be) {}
  template <class T>
  T* put(const std::vector<T>& host) {
    auto buf = backends::must_alloc(be_, std::max<size_t>(host.size(), 1) * sizeof(T));
    be_.stream().copy(buf->data(), host.data(), host.size() * sizeof(T));
    bufs_.push_back(buf);
    return static_cast<T*>(buf->data());
  }
  float* zeros(int64_t n) { return put(VecF(static_cast<size_t>(n), 0.0f)); }
  template <class T>
  std::vector<T> get(const T* dev, int64_t n) {
    std::vector<T> out(static_cast<size_t>(n));
    be_.stream().copy(out.data(), dev, out.size() * sizeof(T));
    EXPECT_TRUE(be_.stream().synchronize().ok());
    return out;
  }

 private:
  backends::Backend& be_;
  std::vector<std::shared_ptr<backends::Buffer>> bufs_;
};

class BackendOps : public ::testing::TestWithParam<backends::Backend*> {
 protected:
  backends::Backend& be() { return *GetParam(); }
  const kernels::Ops& k() { return be().ops(); }
  DeviceArrays dev{*GetParam()};
  std::mt19937 rng{7};
};

}  // namespace stem::test
