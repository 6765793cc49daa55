// Edit overlays: a small file of STEM row replacements (layer, token, row[f])
// that is applied on top of a loaded model, never written into its checkpoint.
// An overlay also records the shape of the model it was made for (V, f, the
// number of layers and which are STEM layers), so that applying it to another
// model is a clear error instead of silent damage.
//
// This header is the file format and its checks. Deciding what to edit is in
// stem/edit.h (swap, inject); applying an overlay to a model is
// stem::apply_overlays, which works wherever the tables live.
//
// File layout, version 1 (all integers little-endian):
//   bytes  0..7   magic "STEMEDIT"
//          8..11  u32 version (1)
//         12..15  u32 row dtype (0: F32; nothing else yet)
//         16..23  u64 vocab_size V
//         24..31  u64 row width f (intermediate_size)
//         32..39  u64 num_hidden_layers L
//         40..47  u64 S, the number of STEM layers
//         48..55  u64 E, the number of entries
//         56..63  u64 J, bytes of the note
//         64..    S x u32 STEM layer indices, ascending
//                 J bytes of note (UTF-8 JSON: what made the overlay)
//                 E x (u32 layer, u32 token, f x f32 row)
//                 u64 FNV-1a 64 checksum of every byte before it
// A reader checks every header field, the exact file size, the checksum, and
// each entry: a STEM layer of the recorded shape, token < V, a finite row, no
// (layer, token) twice. Writers go through a temporary file and a rename.
//
// Invariant of an Overlay in memory: keys.size() * shape.row_width ==
// rows.size(); validate_overlay() checks the rest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stem/config.h"
#include "stem/status.h"

namespace stem::edit {

inline constexpr char kOverlayMagic[8] = {'S', 'T', 'E', 'M', 'E', 'D', 'I', 'T'};
inline constexpr uint32_t kOverlayVersion = 1;
inline constexpr int64_t kOverlayHeaderBytes = 64;

// The shape of the model an overlay fits.
struct OverlayShape {
  int64_t vocab_size = 0;            // V
  int64_t row_width = 0;             // f
  int64_t n_layers = 0;              // L
  std::vector<int32_t> stem_layers;  // ascending
  static OverlayShape of(const ModelConfig& cfg);
  bool is_stem_layer(int32_t layer) const;
  bool operator==(const OverlayShape&) const = default;
};

struct RowKey {
  int32_t layer = 0;  // a STEM layer
  int32_t token = 0;  // in [0, V)
  bool operator==(const RowKey&) const = default;
};

struct Overlay {
  OverlayShape shape;
  std::string note;           // JSON object text, provenance; may be empty
  std::vector<RowKey> keys;   // [E]
  std::vector<float> rows;    // [E, f]

  size_t size() const { return keys.size(); }
  bool empty() const { return keys.empty(); }
  const float* row(size_t i) const { return rows.data() + i * static_cast<size_t>(shape.row_width); }
  float* row(size_t i) { return rows.data() + i * static_cast<size_t>(shape.row_width); }
  // Appends an entry (row has shape.row_width floats).
  void add(int32_t layer, int32_t token, const float* row);
  // Index of (layer, token), or -1.
  int64_t find(int32_t layer, int32_t token) const;
};

// The rules of the file format on an in-memory overlay; `where` names it.
Status validate_overlay(const Overlay& ov, const std::string& where);

Result<Overlay> read_overlay(const std::string& path);
// Validates, then writes atomically.
Status write_overlay(const Overlay& ov, const std::string& path);

// Errors when `ov` was made for a model of another shape than `cfg`; names the
// field and both values: "edit.ovl: made for vocab_size 512, the model has 1024".
Status check_overlay(const Overlay& ov, const ModelConfig& cfg, const std::string& where);

}  // namespace stem::edit
