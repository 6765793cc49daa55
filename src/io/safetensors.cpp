// safetensors reader (mmap + full validation) and atomic writer.
// Reading checks, before returning: the 8-byte header length against the file
// size (and a 100 MB cap, as the reference implementation has), JSON that is an
// object of objects nested no deeper than the format needs, no duplicate
// names, dtype in {F32, BF16, I32}, shapes of non-negative ints, data_offsets
// [begin, end] with begin <= end <= data section size and end - begin equal to
// numel x dtype size, and no two non-empty tensors overlapping. Holes between
// tensors and trailing bytes are tolerated (we never read them). Nothing is
// read outside [0, file size). Data pointers are as aligned as the file makes
// them: our writer aligns the data section to 64 bytes, other writers may not.
// The mapping is read-only and private; truncating the file while it is mapped
// is outside what any reader can defend against (SIGBUS).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/bf16.h"
#include "io/files.h"
#include "io/json_text.h"

namespace stem::io {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as huggingface/safetensors
constexpr int kMaxDepth = 8;                        // the format needs 3

// A non-negative integer JSON value (nlohmann stores those as unsigned).
bool get_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

bool parse_dtype(const std::string& s, DType* out) {
  for (DType t : {DType::F32, DType::BF16, DType::I32}) {
    if (s == dtype_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

struct NestedTooDeep {};
struct DuplicateName {
  std::string name;
};

struct Range {
  uint64_t begin, end;
  size_t entry;
};

}  // namespace

void SafetensorsFile::release(const SafetensorsEntry& e) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base_ + e.offset);
  const uintptr_t end = begin + e.nbytes;
  const uintptr_t b = (begin + page - 1) / page * page, en = end / page * page;  // whole pages inside
  if (en > b) ::madvise(reinterpret_cast<void*>(b), en - b, MADV_DONTNEED);
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors: " + path + ": ";
  auto fail = [&](const std::string& what) { return Status::error(where + what); };

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail(std::string("cannot stat: ") + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return fail("is a directory, expected a .safetensors file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("is not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return fail("file is empty");
  }
  if (size < 8) {
    ::close(fd);
    return fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (addr == MAP_FAILED) return fail(std::string("mmap failed: ") + std::strerror(map_err));

  SafetensorsFile f;
  f.path_ = path;
  f.file_size_ = size;
  f.mapping_ = std::shared_ptr<void>(addr, [size](void* p) { ::munmap(p, size); });
  f.base_ = static_cast<const std::byte*>(addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(f.base_[i]);
  if (header_len == 0) return fail("header length is 0 (a header is at least '{}')");
  if (header_len > size - 8)
    return fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
                std::to_string(size) + " bytes); the file is truncated or not safetensors");
  if (header_len > kMaxHeaderBytes)
    return fail("header length " + std::to_string(header_len) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  // Parse, refusing deep nesting (the format needs 3 levels) and duplicate
  // tensor names (nlohmann would silently keep the last one).
  json header;
  {
    const char* begin = reinterpret_cast<const char*>(f.base_ + 8);
    const char* end = begin + header_len;
    std::set<std::string> seen;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
          depth >= kMaxDepth)
        throw NestedTooDeep{};
      if (event == json::parse_event_t::key && depth == 1) {
        std::string key = parsed.get<std::string>();
        if (!seen.insert(key).second) throw DuplicateName{std::move(key)};
      }
      return true;
    };
    try {
      header = json::parse(begin, end, cb);
    } catch (const json::exception& e) {
      return fail("header is not valid JSON: " + strip_json_prefix(e.what()));
    } catch (const NestedTooDeep&) {
      return fail("header JSON is nested more than " + std::to_string(kMaxDepth) + " levels deep");
    } catch (const DuplicateName& d) {
      return fail("header names '" + d.name + "' twice");
    }
  }
  if (!header.is_object()) return fail(std::string("header is not a JSON object (got ") + header.type_name() + ")");

  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return fail("__metadata__ is not a JSON object (got " + shown(v) + ")");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return fail("__metadata__ '" + m.key() + "' is not a string (got " + shown(m.value()) + ")");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail("tensor '" + name + "': " + what); };
    if (!v.is_object()) return bad("entry is not a JSON object (got " + shown(v) + ")");

    SafetensorsEntry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end()) return bad("missing 'dtype'");
    if (!dt->is_string()) return bad("'dtype' is not a string (got " + shown(*dt) + ")");
    if (!parse_dtype(dt->get<std::string>(), &e.dtype))
      return bad("unsupported dtype " + shown(*dt) + " (stem reads F32, BF16, I32)");

    auto sh = v.find("shape");
    if (sh == v.end()) return bad("missing 'shape'");
    if (!sh->is_array()) return bad("'shape' is not an array (got " + shown(*sh) + ")");
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      uint64_t n = 0;
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
        return bad("shape " + shown(*sh) + " has a negative dimension " + shown(d));
      if (!get_u64(d, &n)) return bad("shape " + shown(*sh) + " has an element that is not a non-negative integer");
      if (n > static_cast<uint64_t>(INT64_MAX)) return bad("shape " + shown(*sh) + " has a dimension too large");
      e.shape.push_back(static_cast<int64_t>(n));
      overflow |= __builtin_mul_overflow(numel, n, &numel);
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.dtype)), &nbytes);
    if (overflow || numel > static_cast<uint64_t>(INT64_MAX))
      return bad("shape " + shape_str(e.shape) + " has too many elements");

    auto off = v.find("data_offsets");
    if (off == v.end()) return bad("missing 'data_offsets'");
    uint64_t b = 0, en = 0;
    if (!off->is_array() || off->size() != 2 || !get_u64((*off)[0], &b) || !get_u64((*off)[1], &en))
      return bad("'data_offsets' must be [begin, end] of non-negative integers, got " + shown(*off));
    const std::string offs = "data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "]";
    if (en < b) return bad(offs + " end before begin");
    if (en > data_size)
      return bad(offs + " end past the data section (" + std::to_string(data_size) + " bytes)");
    if (en - b != nbytes)
      return bad(offs + " span " + std::to_string(en - b) + " bytes but " + dtype_name(e.dtype) + " " +
                 shape_str(e.shape) + " needs " + std::to_string(nbytes));
    e.offset = static_cast<size_t>(data_start + b);
    e.nbytes = static_cast<size_t>(nbytes);
    ranges.push_back({b, en, f.entries_.size()});
    f.entries_.push_back(std::move(e));
  }

  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // An empty range overlaps nothing; among the others each must start at or
  // after the furthest end seen so far.
  const Range* prev = nullptr;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (prev && r.begin < prev->end) {
      const auto& a = f.entries_[prev->entry];
      const auto& c = f.entries_[r.entry];
      return fail("tensors '" + a.name + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) +
                  "] and '" + c.name + "' [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                  "] overlap");
    }
    if (!prev || r.end > prev->end) prev = &r;
  }

  std::vector<SafetensorsEntry> sorted;
  sorted.reserve(ranges.size());
  for (const Range& r : ranges) sorted.push_back(std::move(f.entries_[r.entry]));
  f.entries_ = std::move(sorted);
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Status read_rows(const SafetensorsFile& f, const std::string& name, const Shape& shape, int64_t block_rows,
                 const std::function<void(int64_t r0, int64_t n, const float* rows)>& block) {
  const SafetensorsEntry* e = f.find(name);
  if (!e) return Status::error(f.path() + ": missing tensor '" + name + "'");
  if (e->shape != shape || (e->dtype != DType::F32 && e->dtype != DType::BF16) || shape.size() != 2)
    return Status::error(f.path() + ": tensor '" + name + "' is " + dtype_name(e->dtype) + " " + shape_str(e->shape) +
                         ", expected F32 or BF16 " + shape_str(shape));
  const int64_t R = shape[0], C = shape[1], width = static_cast<int64_t>(dtype_size(e->dtype));
  std::vector<float> buf(static_cast<size_t>(std::min(block_rows, R) * C));
  for (int64_t r0 = 0; r0 < R; r0 += block_rows) {
    const int64_t n = std::min(block_rows, R - r0);
    const std::byte* src = f.data(*e) + r0 * C * width;
    if (e->dtype == DType::F32) {
      std::memcpy(buf.data(), src, sizeof(float) * n * C);
    } else {
      for (int64_t k = 0; k < n * C; ++k) {
        uint16_t b;
        std::memcpy(&b, src + 2 * k, 2);
        buf[k] = core::bf16_to_float(b);
      }
    }
    block(r0, n, buf.data());
  }
  f.release(*e);
  return ok_status();
}

Status write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                         const std::map<std::string, std::string>& metadata) {
  const std::string where = "safetensors: " + path + ": ";
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"];
    m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const SafetensorsItem& it : items) {
    auto bad = [&](const std::string& what) { return Status::error(where + "tensor '" + it.name + "': " + what); };
    if (it.name.empty()) return Status::error(where + "a tensor has an empty name");
    if (it.name == "__metadata__") return bad("the name is reserved for metadata");
    if (!names.insert(it.name).second) return bad("duplicate tensor name");
    uint64_t numel = 1;
    bool overflow = false;
    for (int64_t d : it.shape) {
      if (d < 0) return bad("shape " + shape_str(it.shape) + " has a negative dimension");
      overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel);
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(it.dtype)), &nbytes);
    if (overflow) return bad("shape " + shape_str(it.shape) + " has too many elements");
    if (nbytes > 0 && it.data == nullptr && !it.produce) return bad("data is null");
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, nbytes, &end)) return bad("data section too large");
    header[it.name] = {{"dtype", dtype_name(it.dtype)}, {"shape", it.shape}, {"data_offsets", {offset, end}}};
    sizes.push_back(nbytes);
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    return Status::error(where + "a tensor name or metadata string is not valid UTF-8");
  }
  // Pad with spaces so the data section starts 64-byte aligned.
  text.append((64 - (8 + text.size()) % 64) % 64, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  return write_file_atomic(path, [&](int fd) {
    STEM_RETURN_IF_ERROR(write_all(fd, len, 8, path));
    STEM_RETURN_IF_ERROR(write_all(fd, text.data(), text.size(), path));
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].data || !items[i].produce) {
        STEM_RETURN_IF_ERROR(write_all(fd, items[i].data, sizes[i], path));
        continue;
      }
      uint64_t written = 0;
      STEM_RETURN_IF_ERROR(items[i].produce([&](const void* bytes, size_t n) -> Status {
        if (written + n > sizes[i]) return Status::error(where + "tensor '" + items[i].name + "': too many bytes streamed");
        written += n;
        return write_all(fd, bytes, n, path);
      }));
      if (written != sizes[i])
        return Status::error(where + "tensor '" + items[i].name + "': " + std::to_string(written) + " bytes streamed, " +
                             std::to_string(sizes[i]) + " expected");
    }
    return ok_status();
  });
}

}  // namespace stem::io
