// stem convert: a checkpoint's weights stored in another dtype (F32 <-> BF16,
// all weight matrices or the STEM tables only), and/or the row-major pack of
// its STEM tables (tables.stem) that lets the disk tier read one token's rows
// of every layer at once. The source checkpoint is never changed, except that
// --pack-tables without --out adds tables.stem beside it.
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "stem/model.h"

namespace stem::cli {
namespace {

struct ConvertOpts {
  std::string model_dir, out_dir, dtype;
  bool tables_only = false, pack = false, json = false;
};

int run_convert(const ConvertOpts& o) {
  const char* cmd = "convert";
  if (o.dtype.empty() && !o.pack)
    return fail(cmd, Status::error("nothing to do: give --dtype (with --out) and/or --pack-tables"));
  if (!o.dtype.empty() && o.out_dir.empty())
    return fail(cmd, Status::error("--dtype writes a new checkpoint: give --out DIR"));
  if (o.tables_only && o.dtype.empty()) return fail(cmd, Status::error("--tables-only needs --dtype"));
  const auto t0 = std::chrono::steady_clock::now();
  auto src = resolve_model_dir(o.model_dir);  // a run directory: its latest checkpoint
  if (!src.ok()) return fail(cmd, src.status());
  std::string target = *src;
  nlohmann::json report = {{"model", *src}};
  if (!o.dtype.empty()) {
    auto bytes = convert_checkpoint(*src, o.out_dir, *parse_weight_dtype(o.dtype), o.tables_only);
    if (!bytes.ok()) return fail(cmd, bytes.status());
    report["out"] = o.out_dir;
    report["dtype"] = o.dtype;
    report["tables_only"] = o.tables_only;
    report["weight_bytes"] = *bytes;
    target = o.out_dir;
  }
  if (o.pack) {
    auto packed = pack_checkpoint_tables(target);
    if (!packed.ok()) return fail(cmd, packed.status());
    report["packed_tables"] = *packed;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report["seconds"] = secs;
  if (o.json) {
    print_json(report);
  } else {
    if (report.contains("out"))
      std::printf("wrote %s (%s%s, %.1f MB of weights)\n", o.out_dir.c_str(), o.dtype.c_str(),
                  o.tables_only ? ", tables only" : "", report["weight_bytes"].get<int64_t>() / 1e6);
    if (o.pack) std::printf("wrote %s\n", report["packed_tables"].get<std::string>().c_str());
    std::printf("%.1fs\n", secs);
  }
  return 0;
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOpts>();
  CLI::App* sub = app.add_subcommand("convert", "Store weights as BF16 or F32; pack STEM tables row-major");
  sub->add_option("--model", o->model_dir, "Source model directory")->required();
  sub->add_option("--out", o->out_dir, "New model directory (with --dtype)");
  sub->add_option("--dtype", o->dtype, "Storage dtype of the weight matrices (norms stay F32)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  sub->add_flag("--tables-only", o->tables_only, "Convert only the STEM tables; other weights keep their dtype");
  sub->add_flag("--pack-tables", o->pack,
                "Write tables.stem: the STEM tables row-major ([V][stem layers][f]), one read per token "
                "for --tables disk/mmap (into --out, or beside --model)");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] { return run_convert(*o); });
}

}  // namespace stem::cli
