// Shared by the fuzz targets: the parsers under test read files, so each
// input is written to a file of this process first (in a private temporary
// folder, removed at exit), and the small model the model-shaped targets
// use is read from fuzz/model.json. Nothing here checks a result: a target
// fails only by crashing, hanging, leaking or tripping a sanitizer.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "stem/config.h"

namespace stem::fuzz {

// A private folder for this process's files, removed at exit.
inline const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d = std::filesystem::temp_directory_path() / ("stem-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(work_dir(), ec); });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// The input as the file NAME in the work folder; returns its path.
inline std::string input_file(const uint8_t* data, size_t size, const std::string& name) {
  const std::filesystem::path p = work_dir() / name;
  write_file(p, data, size);
  return p.string();
}

// The model of the model-shaped targets (fuzz/model.json: vocabulary 400,
// dense, STEM and hash-MoE layers), the one scripts/fuzz.sh trains for seeds.
inline const ModelConfig& fuzz_config() {
  static const ModelConfig cfg = [] {
    auto c = ModelConfig::load(STEM_FUZZ_MODEL_JSON);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().message().c_str());
      std::abort();
    }
    return *c;
  }();
  return cfg;
}

}  // namespace stem::fuzz
