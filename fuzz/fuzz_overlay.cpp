// Fuzz target: an overlay file (edited STEM rows), read and checked against
// fuzz/model.json's shape, as `--edit FILE` does before applying it.
#include "fuzz_util.h"
#include "stem/overlay.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  auto ov = edit::read_overlay(fuzz::input_file(data, size, "edit.safetensors"));
  if (ov.ok()) (void)edit::check_overlay(*ov, fuzz::fuzz_config(), "edit.safetensors");
  return 0;
}
