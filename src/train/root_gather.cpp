// The checkpoint gather protocol (see root_gather.h).
#include "train/root_gather.h"

#include "core/check.h"

namespace stem::train {

StateStream root_stream(dist::Comm& comm, GatherPart part) {
  STEM_CHECK(comm.rank() == 0);
  return [&comm, part = std::move(part)](size_t i, int kind, const io::ByteSink& sink) -> Status {
    int32_t cmd[2] = {static_cast<int32_t>(i), kind};
    STEM_RETURN_IF_ERROR(comm.broadcast(cmd, sizeof cmd, 0).with_context("checkpoint"));
    return part(i, kind, &sink);
  };
}

Status end_gathers(dist::Comm& comm, const Status& save) {
  STEM_CHECK(comm.rank() == 0);
  int32_t cmd[2] = {-1, save.ok() ? 1 : 0};
  STEM_RETURN_IF_ERROR(comm.broadcast(cmd, sizeof cmd, 0).with_context("checkpoint"));
  return save;
}

Status serve_gathers(dist::Comm& comm, const GatherPart& part) {
  STEM_CHECK(comm.rank() != 0);
  for (;;) {
    int32_t cmd[2] = {0, 0};
    STEM_RETURN_IF_ERROR(comm.broadcast(cmd, sizeof cmd, 0).with_context("checkpoint"));
    if (cmd[0] < 0) return cmd[1] ? ok_status() : Status::error("checkpoint: rank 0 could not write it");
    STEM_RETURN_IF_ERROR(part(static_cast<size_t>(cmd[0]), cmd[1], nullptr));
  }
}

}  // namespace stem::train
