// The solo communicator and the choice of the world (see comm.h). The MPI
// one is in comm_mpi.cpp, compiled when CMake finds MPI.
#include "dist/comm.h"

#include <cstdlib>
#include <cstring>

namespace stem::dist {
namespace {

class SoloComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "solo"; }
  Status all_reduce_sum(float*, int64_t) override { return ok_status(); }
  Status all_reduce_sum(double*, int64_t) override { return ok_status(); }
  Status all_reduce_max(int32_t*, int64_t) override { return ok_status(); }
  Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                      const std::vector<int64_t>& recv_counts) override {
    if (send_counts.size() != 1 || recv_counts.size() != 1 || send_counts[0] != recv_counts[0])
      return Status::error("comm solo: all_to_all_v counts disagree");
    if (send_counts[0] > 0) std::memcpy(recv, send, static_cast<size_t>(send_counts[0]));
    return ok_status();
  }
  Status broadcast(void*, int64_t, int) override { return ok_status(); }
  Status gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>&, int) override {
    if (bytes > 0) std::memcpy(recv, send, static_cast<size_t>(bytes));
    return ok_status();
  }
  Status all_gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>&) override {
    if (send && bytes > 0) std::memcpy(recv, send, static_cast<size_t>(bytes));
    return ok_status();
  }
  Status barrier() override { return ok_status(); }
  Status start_all_reduce_sum(float*, int64_t) override { return ok_status(); }
  Status start_all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts) override {
    return all_to_all_v(send, send_counts, recv, recv_counts);
  }
  Status start_reduce_scatter_sum(const float* send, float* recv, const std::vector<int64_t>& counts) override {
    if (counts.size() != 1) return Status::error("comm solo: reduce_scatter needs one count");
    if (counts[0] > 0 && send != recv) std::memcpy(recv, send, static_cast<size_t>(counts[0]) * sizeof(float));
    return ok_status();
  }
  Status wait_all() override { return ok_status(); }
};

}  // namespace

std::unique_ptr<Comm> solo_comm() { return std::make_unique<SoloComm>(); }

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

#ifndef STEM_HAVE_MPI
Result<Comm*> world() {
  static std::unique_ptr<Comm> solo = solo_comm();
  if (launched_by_mpi())
    return Status::error("comm: started by an MPI launcher, but this stem was built without MPI "
                         "(install libopenmpi-dev and rebuild)");
  return solo.get();
}

void abort_world(int) {}
#endif

}  // namespace stem::dist
