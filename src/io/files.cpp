// File helpers: atomic writes, whole-file reads, .npy output, token-id files.
// Atomic write: the data goes to `.<basename>.tmp.<pid>` in the destination's
// directory, is fsynced, renamed over the destination, and the directory is
// fsynced, so a reader sees the old file or the new one, never a mix. Two
// threads of one process must not write the same path at once (they would
// share the temporary name). Nothing here buffers in user space beyond one
// call; nothing here knows about models.
#include "io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <string_view>

namespace stem::io {

namespace {

static_assert(std::endian::native == std::endian::little,
              "stem writes little-endian files by copying memory");

std::string errno_str(int err) { return std::strerror(err); }

// Parent directory and base name of `path` ("a/b.json" -> "a", "b.json").
void split_path(const std::string& path, std::string* dir, std::string* base) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *base = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }

 private:
  int fd_;
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

Status write_all(int fd, const void* data, size_t n, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; ask for less to keep it portable.
    const size_t chunk = std::min<size_t>(n, size_t{1} << 30);
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::error(what + ": write failed: " + errno_str(errno));
    }
    if (w == 0) return Status::error(what + ": write made no progress (" + std::to_string(n) + " bytes left)");
    p += w;
    n -= static_cast<size_t>(w);
  }
  return ok_status();
}

Status write_file_atomic(const std::string& path, const std::function<Status(int fd)>& write) {
  if (path.empty() || path.back() == '/') return Status::error("write: '" + path + "' is not a file path");
  std::string dir, base;
  split_path(path, &dir, &base);
  const std::string tmp_dir = path.find('/') == std::string::npos ? "" : dir == "/" ? "/" : dir + "/";
  const std::string tmp = tmp_dir + "." + base + ".tmp." + std::to_string(::getpid());

  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (fd.get() < 0)
    return Status::error(path + ": cannot create temporary file '" + tmp + "': " + errno_str(errno));

  auto fail = [&](Status s) {
    ::close(fd.release());
    ::unlink(tmp.c_str());
    return s;
  };
  Status s;
  try {
    s = write(fd.get());
  } catch (...) {
    (void)fail(Status());
    throw;
  }
  if (!s.ok()) return fail(s);
  if (::fsync(fd.get()) != 0) return fail(Status::error(path + ": fsync failed: " + errno_str(errno)));
  if (::close(fd.release()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::error(path + ": close failed: " + errno_str(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::error(path + ": cannot rename '" + tmp + "' into place: " + errno_str(err));
  }
  // Make the rename itself durable.
  if (Status s = fsync_dir(dir); !s.ok()) return Status::error(path + ": written, but " + s.message());
  return ok_status();
}

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::error(dir + ": cannot open the directory to sync it: " + errno_str(errno));
  if (::fsync(fd.get()) != 0 && errno != EINVAL && errno != ENOTSUP)
    return Status::error(dir + ": fsync of the directory failed: " + errno_str(errno));
  return ok_status();
}

Status write_text_atomic(const std::string& path, const std::string& text) {
  return write_file_atomic(path, [&](int fd) { return write_all(fd, text.data(), text.size(), path); });
}

Result<std::string> read_text(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::error(path + ": cannot open: " + errno_str(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::error(path + ": cannot stat: " + errno_str(errno));
  if (S_ISDIR(st.st_mode)) return Status::error(path + ": is a directory, expected a file");
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::error(path + ": read failed: " + errno_str(errno));
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

Status write_npy_f32(const std::string& path, const float* data, const Shape& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return Status::error(path + ": npy shape " + shape_str(shape) + " has a negative dimension");
    if (i) dims += ", ";
    dims += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dims += ",";  // Python's one-element tuple
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + header length (2) + header + '\n', padded with
  // spaces so the data starts 64-byte aligned, as NumPy itself writes.
  const size_t prefix = 10;
  size_t total = prefix + header.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  header.append(padded - total, ' ');
  header += '\n';
  if (header.size() > 65535)
    return Status::error(path + ": npy header of " + std::to_string(header.size()) +
                         " bytes does not fit format 1.0 (shape " + shape_str(shape) + ")");
  const size_t n = static_cast<size_t>(shape_numel(shape));
  if (n > 0 && data == nullptr) return Status::error(path + ": npy data is null for shape " + shape_str(shape));

  std::string head = "\x93NUMPY";
  head += '\x01';
  head += '\x00';
  head += static_cast<char>(header.size() & 0xff);
  head += static_cast<char>(header.size() >> 8);
  head += header;
  return write_file_atomic(path, [&](int fd) {
    STEM_RETURN_IF_ERROR(write_all(fd, head.data(), head.size(), path));
    return write_all(fd, data, n * sizeof(float), path);
  });
}

Result<std::vector<int32_t>> read_token_ids(const std::string& path, int64_t vocab_size) {
  if (vocab_size <= 0)
    return Status::error(path + ": cannot check token ids against vocab_size = " + std::to_string(vocab_size));
  STEM_ASSIGN_OR_RETURN(std::string text, read_text(path));
  // Ids are int32; a vocabulary larger than that still caps them there.
  const int64_t limit = std::min<int64_t>(vocab_size, int64_t{std::numeric_limits<int32_t>::max()} + 1);
  std::vector<int32_t> ids;
  int64_t line = 1;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    if (is_space(*p)) {
      line += *p == '\n';
      ++p;
      continue;
    }
    const char* q = p;
    while (q < end && !is_space(*q)) ++q;
    const std::string_view word(p, static_cast<size_t>(q - p));
    auto where = [&] { return path + ": line " + std::to_string(line) + ": "; };
    auto shown = [&] { return std::string(word.substr(0, 40)) + (word.size() > 40 ? "..." : ""); };
    int64_t id = 0;
    auto [ptr, ec] = std::from_chars(p, q, id);
    if (ec == std::errc::invalid_argument || ptr != q)
      return Status::error(where() + "'" + shown() + "' is not a decimal token id");
    if (ec == std::errc::result_out_of_range || id < 0 || id >= limit)
      return Status::error(where() + "token id " + shown() + " is outside [0, " + std::to_string(vocab_size) +
                           ") (vocab_size " + std::to_string(vocab_size) + ")");
    ids.push_back(static_cast<int32_t>(id));
    p = q;
  }
  if (ids.empty()) return Status::error(path + ": no token ids (the file is empty)");
  return ids;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    size_t end = nl;
    if (end > at && text[end - 1] == '\r') --end;
    out.push_back(text.substr(at, end - at));
    at = nl + 1;
  }
  return out;
}

}  // namespace stem::io
