// ShardedMoments: ZeRO stage 1 for the backbone (every trainable tensor but
// the STEM tables, which ShardedTables shards by token id). Each of N ranks
// keeps the AdamW moments of 1/N of the backbone and updates only that part
// of the weights; the weights stay whole on every rank. Per step:
//   - the gradient arena's buckets (ranges of consecutive dense gradients)
//     are summed by a reduce-scatter that leaves each rank the sum of its
//     1/N of each bucket (start(), called by the last backward as each
//     bucket's stage finishes, so it overlaps the rest of the backward);
//     row-sparse gradients (the untied embedding) are summed whole by the
//     trainer, and a rank owns a contiguous range of their rows;
//   - the squared gradient norm, each rank's blocks and rows summed over
//     ranks and then in the order one process sums them (grad_norm.h), so
//     that clipping scales by the same factor bit for bit;
//   - step(): AdamW on the owned parts with the one-process arithmetic, then
//     an all-gather of the updated weights, so every rank has all of them.
// The bytes moved equal a plain all-reduce's (reduce-scatter + all-gather);
// the moments take 2/N of the backbone's size instead of 2x.
// A checkpoint gathers each tensor's moments to rank 0 (gather()); the files
// are those of one process, so a run resumes with any N, with or without it,
// each rank reading only its parts of them.
// It knows the tensor lists, the optimizer and the communicator, not the loop.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "train/adamw.h"

namespace stem::train {

class ShardedMoments {
 public:
  struct Range {  // a bucket: [n] consecutive elements of the gradient arena
    float* data;
    int64_t n;
  };
  // Where the moments start: elements [e0, e0 + n) of tensor i's moment
  // `kind` (1 first, 2 second) into dst, which holds zeros (fresh moments
  // leave them).
  using MomentSource = std::function<Status(size_t i, int kind, int64_t e0, int64_t n, float* dst)>;
  // Reads this rank's parts of the backbone's moments from `source`; adam
  // keeps none of them (AdamWOptions::backbone_moments), so no rank ever holds
  // them whole. Every dense gradient of g lies in exactly one of `buckets`.
  static Result<std::unique_ptr<ShardedMoments>> create(model::TensorList& weights, model::Gradients& g,
                                                        AdamW& adam, dist::Comm& comm,
                                                        const std::vector<Range>& buckets,
                                                        const MomentSource& source);

  // Starts bucket b's reduce-scatter (finished by comm.wait_all()).
  Status start(size_t b);
  // After wait_all() and the row-sparse sums, collective: the squared norm
  // of the backbone gradient, summed in grad_norm.h's order (as one process
  // sums it), the same on every rank.
  Result<double> sum_squares();
  void scale(float factor);  // the owned summed gradients (clipping)
  // After adam.step(): AdamW on the owned parts, then every rank gets every
  // weight. Collective.
  Status step(float lr);

  bool holds(size_t i) const { return part_of_[i] >= 0; }
  // Collective: tensor i's moment (kind 1 or 2, as in StateStream) gathered
  // at rank 0 into `sink` (null on the other ranks).
  Status gather(size_t i, int kind, const io::ByteSink* sink);
  int64_t moment_bytes() const;  // this rank's

 private:
  ShardedMoments(model::TensorList& w, model::Gradients& g, AdamW& adam, dist::Comm& comm)
      : w_(w), g_(g), adam_(adam), comm_(comm) {}
  struct Part {  // tensor i's elements [e0, e0 + n) owned here
    size_t i;
    int64_t e0, n;
    int64_t at;     // dense: offset in own_ (and the moments); rows: row-sparse tensor number
    int64_t bucket; // dense: its bucket; rows: -1
  };
  int64_t count(int64_t n, int r) const { return n / N_ + (r < n % N_ ? 1 : 0); }
  int64_t first(int64_t n, int r) const { return r * (n / N_) + std::min<int64_t>(r, n % N_); }
  // A bucket of n elements: rank r's slice, cut at multiples of kNormBlock
  // (so that the norm's blocks are each held whole by one rank).
  int64_t bucket_first(int64_t n, int r) const;
  int64_t bucket_count(int64_t n, int r) const { return bucket_first(n, r + 1) - bucket_first(n, r); }
  // Rows [r0, r1) of row-sparse tensor i that rank r owns.
  std::pair<int64_t, int64_t> rows_of(size_t i, int r) const;

  model::TensorList& w_;
  model::Gradients& g_;
  AdamW& adam_;
  dist::Comm& comm_;
  int N_ = 1, me_ = 0;
  std::vector<Range> buckets_;
  std::vector<int64_t> bucket_at_;   // [buckets] offset of this rank's slice in own_
  std::vector<Part> parts_;          // in tensor order
  std::vector<int> part_of_;         // [tensors] index into parts_, or -1
  std::vector<float> own_;           // [this rank's slices] summed gradients, then the weights sent out
  std::vector<float> m_, v_;         // [same] moments of the dense parts
  std::vector<std::vector<float>> row_m_, row_v_;  // [row-sparse tensors][rows owned, C]
};

}  // namespace stem::train
