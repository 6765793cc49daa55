// Edit overlays: the file format (see overlay.h), shape checks, and applying
// entries through RowTable with an exact undo. Reading parses a byte buffer
// with bounds checked at every step, so a truncated or corrupted file is an
// error naming the file and the field, never a read past the end.
#include "edit/overlay.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/check.h"
#include "io/files.h"

namespace stem::edit {

namespace {

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s.empty() ? "none" : s;
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Sequential reader over the file's bytes.
class Cursor {
 public:
  Cursor(const std::string& bytes, const std::string& where) : b_(bytes), where_(where) {}
  template <typename T>
  Status get(T* v, const char* field) {
    if (pos_ + sizeof(T) > b_.size())
      return Status::error(where_ + ": truncated: " + std::to_string(b_.size()) + " bytes, ends inside " + field);
    std::memcpy(v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return ok_status();
  }
  size_t pos() const { return pos_; }
  void skip(size_t n) { pos_ += n; }

 private:
  const std::string& b_;
  const std::string& where_;
  size_t pos_ = 0;
};

}  // namespace

OverlayShape OverlayShape::of(const ModelConfig& cfg) {
  OverlayShape s;
  s.vocab_size = cfg.vocab_size;
  s.row_width = cfg.intermediate_size;
  s.n_layers = cfg.num_hidden_layers;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.ffn_types[l] == FfnType::Stem) s.stem_layers.push_back(static_cast<int32_t>(l));
  return s;
}

bool OverlayShape::is_stem_layer(int32_t layer) const {
  return std::binary_search(stem_layers.begin(), stem_layers.end(), layer);
}

void Overlay::add(int32_t layer, int32_t token, const float* row) {
  keys.push_back({layer, token});
  rows.insert(rows.end(), row, row + shape.row_width);
}

int64_t Overlay::find(int32_t layer, int32_t token) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i].layer == layer && keys[i].token == token) return static_cast<int64_t>(i);
  return -1;
}

Status validate_overlay(const Overlay& ov, const std::string& where) {
  const OverlayShape& s = ov.shape;
  if (s.vocab_size <= 0 || s.vocab_size > (int64_t{1} << 31))
    return Status::error(where + ": vocab_size " + std::to_string(s.vocab_size) + " is out of range");
  if (s.row_width <= 0 || s.row_width > (int64_t{1} << 24))
    return Status::error(where + ": row width " + std::to_string(s.row_width) + " is out of range");
  if (s.n_layers <= 0 || s.n_layers > 100000)
    return Status::error(where + ": num_hidden_layers " + std::to_string(s.n_layers) + " is out of range");
  for (size_t i = 0; i < s.stem_layers.size(); ++i) {
    const int32_t l = s.stem_layers[i];
    if (l < 0 || l >= s.n_layers || (i > 0 && l <= s.stem_layers[i - 1]))
      return Status::error(where + ": STEM layer list [" + join(s.stem_layers) + "] is not ascending within [0, " +
                           std::to_string(s.n_layers) + ")");
  }
  if (ov.rows.size() != ov.keys.size() * static_cast<size_t>(s.row_width))
    return Status::error(where + ": " + std::to_string(ov.keys.size()) + " entries but " +
                         std::to_string(ov.rows.size()) + " row values (expected " +
                         std::to_string(ov.keys.size() * static_cast<size_t>(s.row_width)) + ")");
  std::set<std::pair<int32_t, int32_t>> seen;
  for (size_t i = 0; i < ov.keys.size(); ++i) {
    const RowKey& k = ov.keys[i];
    const std::string e = where + ": entry " + std::to_string(i) + ": ";
    if (!s.is_stem_layer(k.layer))
      return Status::error(e + "layer " + std::to_string(k.layer) + " is not a STEM layer (STEM layers: " +
                           join(s.stem_layers) + ")");
    if (k.token < 0 || k.token >= s.vocab_size)
      return Status::error(e + "token " + std::to_string(k.token) + " is outside [0, vocab_size = " +
                           std::to_string(s.vocab_size) + ")");
    if (!seen.insert({k.layer, k.token}).second)
      return Status::error(e + "layer " + std::to_string(k.layer) + " token " + std::to_string(k.token) +
                           " appears twice");
    const float* r = ov.row(i);
    for (int64_t c = 0; c < s.row_width; ++c)
      if (!std::isfinite(r[c]))
        return Status::error(e + "layer " + std::to_string(k.layer) + " token " + std::to_string(k.token) +
                             ": row value " + std::to_string(c) + " is " + (std::isnan(r[c]) ? "NaN" : "Inf"));
  }
  return ok_status();
}

Status write_overlay(const Overlay& ov, const std::string& path) {
  STEM_RETURN_IF_ERROR(validate_overlay(ov, path));
  std::string b;
  b.reserve(static_cast<size_t>(kOverlayHeaderBytes) + ov.note.size() + ov.rows.size() * 4 + ov.keys.size() * 8 + 64);
  b.append(kOverlayMagic, 8);
  put<uint32_t>(b, kOverlayVersion);
  put<uint32_t>(b, 0);  // F32 rows
  put<uint64_t>(b, static_cast<uint64_t>(ov.shape.vocab_size));
  put<uint64_t>(b, static_cast<uint64_t>(ov.shape.row_width));
  put<uint64_t>(b, static_cast<uint64_t>(ov.shape.n_layers));
  put<uint64_t>(b, ov.shape.stem_layers.size());
  put<uint64_t>(b, ov.keys.size());
  put<uint64_t>(b, ov.note.size());
  for (int32_t l : ov.shape.stem_layers) put<uint32_t>(b, static_cast<uint32_t>(l));
  b += ov.note;
  for (size_t i = 0; i < ov.keys.size(); ++i) {
    put<uint32_t>(b, static_cast<uint32_t>(ov.keys[i].layer));
    put<uint32_t>(b, static_cast<uint32_t>(ov.keys[i].token));
    b.append(reinterpret_cast<const char*>(ov.row(i)), static_cast<size_t>(ov.shape.row_width) * sizeof(float));
  }
  put<uint64_t>(b, fnv1a(b.data(), b.size()));
  return io::write_file_atomic(path, [&](int fd) { return io::write_all(fd, b.data(), b.size(), path); });
}

Result<Overlay> read_overlay(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string b, io::read_text(path));
  Cursor c(b, path);
  if (b.size() < 8 || std::memcmp(b.data(), kOverlayMagic, 8) != 0) {
    std::string shown;
    for (size_t i = 0; i < std::min<size_t>(8, b.size()); ++i)
      shown += (b[i] >= 32 && b[i] < 127) ? b[i] : '.';
    return Status::error(path + ": not a stem edit overlay (magic '" + shown + "', expected 'STEMEDIT')");
  }
  c.skip(8);
  uint32_t version = 0, dtype = 0;
  uint64_t V = 0, f = 0, L = 0, S = 0, E = 0, J = 0;
  STEM_RETURN_IF_ERROR(c.get(&version, "version"));
  if (version != kOverlayVersion)
    return Status::error(path + ": overlay version " + std::to_string(version) + " is not supported (this build reads " +
                         std::to_string(kOverlayVersion) + ")");
  STEM_RETURN_IF_ERROR(c.get(&dtype, "dtype"));
  if (dtype != 0) return Status::error(path + ": row dtype code " + std::to_string(dtype) + " is not supported (0: F32)");
  STEM_RETURN_IF_ERROR(c.get(&V, "vocab_size"));
  STEM_RETURN_IF_ERROR(c.get(&f, "row width"));
  STEM_RETURN_IF_ERROR(c.get(&L, "num_hidden_layers"));
  STEM_RETURN_IF_ERROR(c.get(&S, "STEM layer count"));
  STEM_RETURN_IF_ERROR(c.get(&E, "entry count"));
  STEM_RETURN_IF_ERROR(c.get(&J, "note length"));
  if (f == 0 || f > (uint64_t{1} << 24)) return Status::error(path + ": row width " + std::to_string(f) + " is out of range");
  if (S > L || L > 100000) return Status::error(path + ": " + std::to_string(S) + " STEM layers of " + std::to_string(L) + " layers");
  // Exact size before reading anything variable-length (no overflow: each term is bounded).
  const uint64_t entry_bytes = 8 + 4 * f;
  if (E > (uint64_t{1} << 40) / entry_bytes || J > (uint64_t{1} << 30))
    return Status::error(path + ": header claims " + std::to_string(E) + " entries and a note of " + std::to_string(J) +
                         " bytes, beyond any overlay");
  const uint64_t want = kOverlayHeaderBytes + 4 * S + J + E * entry_bytes + 8;
  if (b.size() != want)
    return Status::error(path + ": " + std::to_string(b.size()) + " bytes, but its header describes " + std::to_string(want) +
                         (b.size() < want ? " (truncated)" : " (trailing bytes)"));
  uint64_t stored = 0;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  if (stored != fnv1a(b.data(), b.size() - 8))
    return Status::error(path + ": checksum mismatch (the file is corrupted)");
  Overlay ov;
  ov.shape.vocab_size = static_cast<int64_t>(V);
  ov.shape.row_width = static_cast<int64_t>(f);
  ov.shape.n_layers = static_cast<int64_t>(L);
  for (uint64_t i = 0; i < S; ++i) {
    uint32_t l = 0;
    STEM_RETURN_IF_ERROR(c.get(&l, "STEM layer list"));
    ov.shape.stem_layers.push_back(static_cast<int32_t>(l));
  }
  ov.note.assign(b.data() + c.pos(), J);
  c.skip(J);
  ov.keys.resize(E);
  ov.rows.resize(E * f);
  for (uint64_t i = 0; i < E; ++i) {
    uint32_t l = 0, t = 0;
    STEM_RETURN_IF_ERROR(c.get(&l, "entry layer"));
    STEM_RETURN_IF_ERROR(c.get(&t, "entry token"));
    ov.keys[i] = {static_cast<int32_t>(std::min<uint32_t>(l, INT32_MAX)), static_cast<int32_t>(std::min<uint32_t>(t, INT32_MAX))};
    std::memcpy(ov.row(i), b.data() + c.pos(), f * sizeof(float));
    c.skip(f * sizeof(float));
  }
  STEM_RETURN_IF_ERROR(validate_overlay(ov, path));
  return ov;
}

Status check_overlay(const Overlay& ov, const ModelConfig& cfg, const std::string& where) {
  const OverlayShape want = OverlayShape::of(cfg);
  const OverlayShape& got = ov.shape;
  auto mismatch = [&](const std::string& field, const std::string& a, const std::string& b) {
    return Status::error(where + ": made for a model with " + field + " " + a + ", but this model has " + b);
  };
  if (got.vocab_size != want.vocab_size)
    return mismatch("vocab_size", std::to_string(got.vocab_size), std::to_string(want.vocab_size));
  if (got.row_width != want.row_width)
    return mismatch("intermediate_size", std::to_string(got.row_width), std::to_string(want.row_width));
  if (got.n_layers != want.n_layers)
    return mismatch("num_hidden_layers", std::to_string(got.n_layers), std::to_string(want.n_layers));
  if (got.stem_layers != want.stem_layers)
    return mismatch("STEM layers", "[" + join(got.stem_layers) + "]", "[" + join(want.stem_layers) + "]");
  return ok_status();
}

TensorListRows::TensorListRows(model::TensorList& w) : w_(w) {
  for (size_t i = 0; i < w.size(); ++i) {
    const model::TensorSpec& s = w.spec(i);
    if (s.kind != model::ParamKind::StemTable) continue;
    if (static_cast<int>(table_of_layer_.size()) <= s.layer) table_of_layer_.resize(s.layer + 1, -1);
    table_of_layer_[s.layer] = w[i].empty() ? -2 : static_cast<int>(i);
    V_ = s.shape[0];
    f_ = s.shape[1];
  }
}

Status TensorListRows::all_resident() const {
  for (size_t l = 0; l < table_of_layer_.size(); ++l)
    if (table_of_layer_[l] == -2)
      return Status::error("layer " + std::to_string(l) + ": the STEM table is not held in the weight list (served "
                           "from a file tier); load the model with its tables in RAM as F32 (--tables ram) to edit it");
  return ok_status();
}

Result<float*> TensorListRows::locate(int32_t layer, int32_t token) {
  const int at = layer >= 0 && layer < static_cast<int32_t>(table_of_layer_.size()) ? table_of_layer_[layer] : -1;
  if (at == -2) return all_resident();
  if (at < 0) return Status::error("layer " + std::to_string(layer) + " has no STEM table in this model");
  Tensor& t = w_[at];
  if (t.dtype() != DType::F32) return Status::error("layer " + std::to_string(layer) + ": STEM table is not F32");
  if (token < 0 || token >= t.dim(0))
    return Status::error("token " + std::to_string(token) + " is outside [0, " + std::to_string(t.dim(0)) + ")");
  return t.f32() + static_cast<int64_t>(token) * t.dim(1);
}

Status TensorListRows::read_row(int32_t layer, int32_t token, float* out) {
  STEM_ASSIGN_OR_RETURN(float* p, locate(layer, token));
  std::memcpy(out, p, static_cast<size_t>(f_) * sizeof(float));
  return ok_status();
}

Status TensorListRows::write_row(int32_t layer, int32_t token, const float* row) {
  STEM_ASSIGN_OR_RETURN(float* p, locate(layer, token));
  std::memcpy(p, row, static_cast<size_t>(f_) * sizeof(float));
  return ok_status();
}

Result<Overlay> apply_overlay(const Overlay& ov, RowTable& table) {
  if (table.row_width() != ov.shape.row_width)
    return Status::error("apply: overlay rows have width " + std::to_string(ov.shape.row_width) +
                         ", the tables' rows " + std::to_string(table.row_width()));
  Overlay prev;
  prev.shape = ov.shape;
  prev.note = R"({"kind":"revert"})";
  prev.keys = ov.keys;
  prev.rows.resize(ov.rows.size());
  for (size_t i = 0; i < ov.size(); ++i)
    STEM_RETURN_IF_ERROR(table.read_row(ov.keys[i].layer, ov.keys[i].token, prev.row(i)).with_context("apply"));
  for (size_t i = 0; i < ov.size(); ++i) {
    Status st = table.write_row(ov.keys[i].layer, ov.keys[i].token, ov.row(i));
    if (!st.ok()) {
      for (size_t j = 0; j < i; ++j) (void)table.write_row(prev.keys[j].layer, prev.keys[j].token, prev.row(j));
      return st.with_context("apply");
    }
  }
  return prev;
}

Result<Overlay> apply_overlay(const Overlay& ov, model::TensorList& weights) {
  TensorListRows rows(weights);
  return apply_overlay(ov, rows);
}

Status apply_overlay_files(const std::vector<std::string>& files, const ModelConfig& cfg, RowTable& table,
                           std::vector<Overlay>* undo) {
  std::vector<Overlay> done;
  for (const std::string& f : files) {
    Result<Overlay> ov = read_overlay(f);
    Status st = ov.status();
    if (st.ok()) st = check_overlay(*ov, cfg, f);
    if (st.ok()) {
      Result<Overlay> prev = apply_overlay(*ov, table);
      if (prev.ok()) done.push_back(std::move(*prev));
      else st = prev.status().with_context(f);
    }
    if (!st.ok()) {
      (void)revert_overlays(done, table);  // all or nothing
      return st;
    }
  }
  if (undo) *undo = std::move(done);
  return ok_status();
}

Status apply_overlay_files(const std::vector<std::string>& files, const ModelConfig& cfg, model::TensorList& weights,
                           std::vector<Overlay>* undo) {
  TensorListRows rows(weights);
  return apply_overlay_files(files, cfg, rows, undo);
}

Status revert_overlays(const std::vector<Overlay>& undo, RowTable& table) {
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
    Result<Overlay> r = apply_overlay(*it, table);
    if (!r.ok()) return r.status().with_context("revert");
  }
  return ok_status();
}

Status revert_overlays(const std::vector<Overlay>& undo, model::TensorList& weights) {
  TensorListRows rows(weights);
  return revert_overlays(undo, rows);
}

}  // namespace stem::edit
