// stem convert: a checkpoint's weights stored in another dtype (F32 <-> BF16,
// all weight matrices or the STEM tables only), and/or the row-major pack of
// its STEM tables (tables.stem) that lets the disk tier read one token's rows
// of every layer at once. The source checkpoint is never changed, except that
// --pack-tables without --out adds tables.stem beside it.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "core/timer.h"
#include "io/files.h"
#include "model/tables.h"
#include "model/weights.h"

namespace stem::cli {
namespace fs = std::filesystem;

namespace {

struct ConvertOpts {
  std::string model_dir, out_dir, dtype;
  bool tables_only = false, pack = false, json = false;
};

int run_convert(const ConvertOpts& opts) {
  const char* cmd = "convert";
  ConvertOpts o = opts;
  auto dir = resolve_model_dir(o.model_dir);  // a run directory: its latest checkpoint
  if (!dir.ok()) return fail(cmd, dir.status());
  o.model_dir = *dir;
  if (o.dtype.empty() && !o.pack)
    return fail(cmd, Status::error("nothing to do: give --dtype (with --out) and/or --pack-tables"));
  if (!o.dtype.empty() && o.out_dir.empty())
    return fail(cmd, Status::error("--dtype writes a new checkpoint: give --out DIR"));
  if (o.tables_only && o.dtype.empty()) return fail(cmd, Status::error("--tables-only needs --dtype"));
  auto cfg = ModelConfig::load((fs::path(o.model_dir) / "config.json").string());
  if (!cfg.ok()) return fail(cmd, cfg.status());
  core::Timer timer;
  std::string target = o.model_dir;
  nlohmann::json report = {{"model", o.model_dir}};
  if (!o.dtype.empty()) {
    std::error_code ec;
    if (fs::exists(o.out_dir, ec) && fs::equivalent(o.out_dir, o.model_dir, ec))
      return fail(cmd, Status::error("--out " + o.out_dir + " is the source checkpoint; it is never changed in place"));
    auto dt = parse_weight_dtype(o.dtype);
    if (!dt.ok() || *dt == WeightDType::Auto)
      return fail(cmd, Status::error("--dtype " + o.dtype + ": expected f32 or bf16"));
    model::LoadOptions lo;
    lo.tables = *dt;
    lo.matrices = o.tables_only ? WeightDType::Auto : *dt;
    auto w = model::load_weights(*cfg, (fs::path(o.model_dir) / "model.safetensors").string(), lo);
    if (!w.ok()) return fail(cmd, w.status());
    fs::create_directories(o.out_dir, ec);
    if (ec) return fail(cmd, Status::error(o.out_dir + ": cannot create directory: " + ec.message()));
    Status st = cfg->save((fs::path(o.out_dir) / "config.json").string());
    if (st.ok()) st = model::save_weights(*w, (fs::path(o.out_dir) / "model.safetensors").string());
    const fs::path tok = fs::path(o.model_dir) / "tokenizer.model";
    if (st.ok() && fs::exists(tok, ec)) {
      auto bytes = io::read_text(tok.string());
      st = bytes.ok() ? io::write_text_atomic((fs::path(o.out_dir) / "tokenizer.model").string(), *bytes)
                      : bytes.status();
    }
    if (!st.ok()) return fail(cmd, st);
    int64_t bytes = 0;
    for (size_t i = 0; i < w->size(); ++i) bytes += static_cast<int64_t>((*w)[i].nbytes());
    report["out"] = o.out_dir;
    report["dtype"] = o.dtype;
    report["tables_only"] = o.tables_only;
    report["weight_bytes"] = bytes;
    target = o.out_dir;
  }
  if (o.pack) {
    Status st = model::pack_tables(*cfg, target);
    if (!st.ok()) return fail(cmd, st);
    report["packed_tables"] = (fs::path(target) / model::kPackedTablesFile).string();
  }
  report["seconds"] = timer.seconds();
  if (o.json) {
    print_json(report);
  } else {
    if (report.contains("out"))
      std::printf("wrote %s (%s%s, %.1f MB of weights)\n", o.out_dir.c_str(), o.dtype.c_str(),
                  o.tables_only ? ", tables only" : "", report["weight_bytes"].get<int64_t>() / 1e6);
    if (o.pack) std::printf("wrote %s\n", report["packed_tables"].get<std::string>().c_str());
    std::printf("%.1fs\n", timer.seconds());
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
