// Checkpoint tables for the table store (see tables.h).
#include "model/tables.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <cstring>
#include <filesystem>

#include "io/files.h"
#include "io/safetensors.h"
#include "kernels/infer_kernels.h"
#include "model/tensor_list.h"

namespace stem::model {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'S', 'T', 'E', 'M', 'T', 'B', 'L', '\0'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kDataOffset = 4096;

struct PackHeader {
  char magic[8];
  uint32_t version;
  uint32_t dtype;  // 0 F32, 1 BF16, 2 Q8
  int64_t V, n_stem, f;
  uint64_t source_size;
  int64_t source_mtime_ns;
};

DType pack_dtype(uint32_t code) { return code == 0 ? DType::F32 : code == 1 ? DType::BF16 : DType::Q8; }
uint32_t pack_code(DType t) { return t == DType::F32 ? 0 : t == DType::BF16 ? 1 : 2; }

std::vector<std::string> table_names(const ModelConfig& cfg) {
  std::vector<std::string> names;
  for (const TensorSpec& s : tensor_specs(cfg))
    if (s.kind == ParamKind::StemTable) names.push_back(s.name);
  return names;
}

Result<std::pair<uint64_t, int64_t>> size_and_mtime(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) return Status::error(path + ": " + std::strerror(errno));
  return std::make_pair(static_cast<uint64_t>(sb.st_size),
                        static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec);
}

}  // namespace

bool has_packed_tables(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / kPackedTablesFile, ec);
}

Result<memory::TableFileLayout> checkpoint_tables(const ModelConfig& cfg, const std::string& dir,
                                                  bool packed) {
  const std::vector<std::string> names = table_names(cfg);
  const std::string st_path = (fs::path(dir) / "model.safetensors").string();
  if (names.empty()) return Status::error(dir + ": the model has no STEM layers, so no tables to place");
  memory::TableFileLayout l;
  l.n_rows = cfg.vocab_size;
  l.cols = cfg.intermediate_size;
  if (!packed) {
    STEM_ASSIGN_OR_RETURN(io::SafetensorsFile file, io::SafetensorsFile::open(st_path));
    l.path = st_path;
    for (size_t j = 0; j < names.size(); ++j) {
      const io::SafetensorsEntry* e = file.find(names[j]);
      if (!e) return Status::error(st_path + ": missing tensor '" + names[j] + "'");
      const Shape want{cfg.vocab_size, cfg.intermediate_size};
      if (e->shape != want || (e->dtype != DType::F32 && e->dtype != DType::BF16))
        return Status::error(st_path + ": tensor '" + names[j] + "' is " + dtype_name(e->dtype) + " " +
                             shape_str(e->shape) + ", expected F32 or BF16 " + shape_str(want));
      if (j > 0 && e->dtype != l.dtype)
        return Status::error(st_path + ": STEM tables mix dtypes (" + dtype_name(l.dtype) + " and " +
                             dtype_name(e->dtype) + " in '" + names[j] + "'); convert them to one");
      l.dtype = e->dtype;
      l.base.push_back(e->offset);
    }
    l.row_stride = l.row_bytes();
    return l;
  }
  const std::string path = (fs::path(dir) / kPackedTablesFile).string();
  PackHeader h{};
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error(path + ": " + std::strerror(errno) + " (write it with stem convert --pack-tables)");
    const ssize_t got = ::pread(fd, &h, sizeof h, 0);
    ::close(fd);
    if (got != static_cast<ssize_t>(sizeof h)) return Status::error(path + ": truncated header");
  }
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return Status::error(path + ": not a STEM table pack (bad magic)");
  if (h.version != kVersion)
    return Status::error(path + ": version " + std::to_string(h.version) + ", this build reads version " +
                         std::to_string(kVersion));
  if (h.dtype > 2)
    return Status::error(path + ": dtype code " + std::to_string(h.dtype) + " (expected 0 F32, 1 BF16 or 2 Q8)");
  if (h.V != cfg.vocab_size || h.n_stem != static_cast<int64_t>(names.size()) || h.f != cfg.intermediate_size)
    return Status::error(path + ": packs " + std::to_string(h.n_stem) + " tables of [" + std::to_string(h.V) + ", " +
                         std::to_string(h.f) + "], config.json implies " + std::to_string(names.size()) + " of [" +
                         std::to_string(cfg.vocab_size) + ", " + std::to_string(cfg.intermediate_size) + "]");
  STEM_ASSIGN_OR_RETURN(auto src, size_and_mtime(st_path));
  if (src.first != h.source_size || src.second != h.source_mtime_ns)
    return Status::error(path + ": stale: model.safetensors changed since it was packed "
                         "(rerun stem convert --pack-tables)");
  l.path = path;
  l.dtype = pack_dtype(h.dtype);
  for (int64_t j = 0; j < h.n_stem; ++j) l.base.push_back(kDataOffset + j * l.row_bytes());
  l.row_stride = h.n_stem * l.row_bytes();
  return l;
}

Status pack_tables(const ModelConfig& cfg, const std::string& dir, bool q8) {
  STEM_ASSIGN_OR_RETURN(memory::TableFileLayout src, checkpoint_tables(cfg, dir, /*packed=*/false));
  const std::string st_path = src.path;
  STEM_ASSIGN_OR_RETURN(io::SafetensorsFile file, io::SafetensorsFile::open(st_path));
  STEM_ASSIGN_OR_RETURN(auto sm, size_and_mtime(st_path));
  PackHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  memory::TableFileLayout out = src;  // the rows as packed
  out.dtype = q8 ? DType::Q8 : src.dtype;
  h.dtype = pack_code(out.dtype);
  h.V = src.n_rows;
  h.n_stem = src.n_tables();
  h.f = src.cols;
  h.source_size = sm.first;
  h.source_mtime_ns = sm.second;
  const std::string path = (fs::path(dir) / kPackedTablesFile).string();
  std::vector<const std::byte*> table;  // [M] row 0 of each table in the mapping
  for (const std::string& name : table_names(cfg)) table.push_back(file.data(*file.find(name)));
  return io::write_file_atomic(path, [&](int fd) -> Status {
    std::vector<std::byte> head(kDataOffset, std::byte{0});
    std::memcpy(head.data(), &h, sizeof h);
    STEM_RETURN_IF_ERROR(io::write_all(fd, head.data(), head.size(), path));
    // A block of tokens at a time: [rows][M][row_bytes]; Q8 rows quantized
    // from the source's values (BF16 widened first, which is exact).
    const size_t rb = src.row_bytes(), ob = out.row_bytes(), M = static_cast<size_t>(src.n_tables());
    constexpr int64_t kBlock = 256;
    std::vector<std::byte> buf(kBlock * M * ob);
    std::vector<float> row(static_cast<size_t>(src.cols));
    for (int64_t v0 = 0; v0 < src.n_rows; v0 += kBlock) {
      const int64_t nv = std::min<int64_t>(kBlock, src.n_rows - v0);
      for (int64_t v = 0; v < nv; ++v)
        for (size_t j = 0; j < M; ++j) {
          const std::byte* from = table[j] + (v0 + v) * src.row_stride;
          std::byte* to = buf.data() + (v * M + j) * ob;
          if (!q8) {
            std::memcpy(to, from, rb);
            continue;
          }
          if (src.dtype == DType::F32)
            std::memcpy(row.data(), from, rb);
          else
            kernels::bf16_to_f32_row(row.data(), reinterpret_cast<const uint16_t*>(from), src.cols);
          kernels::quantize_q8_row(reinterpret_cast<uint8_t*>(to), row.data(), src.cols);
        }
      STEM_RETURN_IF_ERROR(io::write_all(fd, buf.data(), nv * M * ob, path));
    }
    return ok_status();
  });
}

}  // namespace stem::model
