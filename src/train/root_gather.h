// Checkpoints of a state spread over ranks (sharded tables, sharded
// moments): rank 0 writes the files of one process, and for each tensor it
// lacks it announces (tensor, kind) and joins the collective that gathers
// it; the other ranks answer announcements until rank 0 says the save is
// over, with its status, which every rank then returns. It knows the
// communicator and what to call, not what a tensor is.
#pragma once

#include <functional>

#include "dist/comm.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"

namespace stem::train {

// Collective: tensor i's `kind` (as in StateStream) gathered at rank 0 into
// *sink (null on the other ranks).
using GatherPart = std::function<Status(size_t i, int kind, const io::ByteSink* sink)>;

// Rank 0: the StateStream save_checkpoint calls; each call is announced.
StateStream root_stream(dist::Comm& comm, GatherPart part);
// Rank 0, after the save: ends the others' serve_gathers with its status.
Status end_gathers(dist::Comm& comm, const Status& save);
// Ranks other than 0: answer rank 0's announcements until it ends them.
Status serve_gathers(dist::Comm& comm, const GatherPart& part);

}  // namespace stem::train
