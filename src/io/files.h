// Small file helpers shared by every writer and reader: atomic writes
// (temporary file in the same directory, fsync, rename), whole-file reads,
// NumPy .npy output, and reading whitespace-separated token ids.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/status.h"
#include "tensor/tensor.h"

namespace stem::io {

// Calls `write(fd)` on a temporary file next to `path`, then fsyncs and renames
// it onto `path`. On any error the temporary file is removed and `path` is left
// as it was.
Status write_file_atomic(const std::string& path, const std::function<Status(int fd)>& write);
Status write_text_atomic(const std::string& path, const std::string& text);
// Makes a directory's entries (a rename into it) durable. File systems that
// refuse fsync on a directory (EINVAL, ENOTSUP) count as success; any other
// failure means the disk did not take them.
Status fsync_dir(const std::string& dir);
// write(2) until done, retrying on EINTR; `what` names the file in errors.
Status write_all(int fd, const void* data, size_t n, const std::string& what);

Result<std::string> read_text(const std::string& path);
// The lines of `text` without their '\n' (and a trailing '\r'); a final line
// without '\n' counts, an empty text has none. Line k is out[k - 1].
std::vector<std::string> lines_of(const std::string& text);

// NumPy .npy (format 1.0), little-endian float32, C order.
Status write_npy_f32(const std::string& path, const float* data, const Shape& shape);

// Whitespace-separated decimal token ids. Errors name the file, the 1-based
// line and the offending text; ids outside [0, vocab_size) are rejected.
Result<std::vector<int32_t>> read_token_ids(const std::string& path, int64_t vocab_size);

}  // namespace stem::io
