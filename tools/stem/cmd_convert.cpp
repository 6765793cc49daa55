// stem convert: a checkpoint's weights stored in another dtype (F32 <-> BF16,
// all weight matrices or the STEM tables only), and/or the row-major pack of
// its STEM tables (tables.stem) that lets the disk tier read one token's rows
// of every layer at once, as stored or in 8 bits (--dtype q8); or its FFN layers changed between dense and STEM
// (--to-stem, --to-dense; docs/convert.md). The source checkpoint is never
// changed, except that --pack-tables without --out adds tables.stem beside it.
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "stem/model.h"

namespace stem::cli {
namespace {

struct ConvertOpts {
  std::string model_dir, out_dir, dtype, init = "embed";
  bool tables_only = false, pack = false, json = false, to_stem = false, to_dense = false;
  ArchConvertOptions arch;
};

int run_arch(const ConvertOpts& o) {
  const char* cmd = "convert";
  ArchConvertOptions a = o.arch;
  auto init = parse_table_init(o.init);
  if (!init.ok()) return fail(cmd, init.status());
  a.init = *init;
  const bool sample = !a.data_dir.empty() && (o.to_dense || a.init == TableInit::Mean);
  Progress bar("sample", std::max<int64_t>(1, a.sample_tokens / std::max<int64_t>(1, a.seq)));
  if (sample && !o.json) a.progress = [&bar](int64_t done, int64_t) { bar.update(done); };
  const auto t0 = std::chrono::steady_clock::now();
  auto rep = o.to_stem ? convert_to_stem(o.model_dir, o.out_dir, a) : convert_to_dense(o.model_dir, o.out_dir, a);
  if (sample && !o.json) bar.finish();
  if (!rep.ok()) return fail(cmd, rep.status());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = {{"model", o.model_dir},         {"out", o.out_dir},
                      {"to", o.to_stem ? "stem" : "dense"}, {"layers", rep->layers},
                      {"sample_tokens", rep->sample_tokens}, {"tokens_seen", rep->tokens_seen},
                      {"weight_bytes", rep->weight_bytes},   {"seconds", secs}};
  if (o.to_stem) j["init"] = o.init;
  else j["fit_rel_error"] = rep->fit_rel_error;
  if (o.json) {
    print_json(j);
    return 0;
  }
  std::string layers;
  for (int l : rep->layers) layers += (layers.empty() ? "" : ",") + std::to_string(l);
  std::printf("wrote %s: layers %s made %s", o.out_dir.c_str(), layers.c_str(), o.to_stem ? "STEM" : "dense");
  if (o.to_stem) std::printf(" (tables: %s)", o.init.c_str());
  else std::printf(" (up-projection fitted, relative error %.3f)", rep->fit_rel_error);
  if (rep->sample_tokens > 0)
    std::printf("; sample of %ld tokens, %ld distinct", static_cast<long>(rep->sample_tokens),
                static_cast<long>(rep->tokens_seen));
  std::printf("\n%.1fs\n", secs);
  return 0;
}

int run_convert(const ConvertOpts& o) {
  const char* cmd = "convert";
  if (o.to_stem || o.to_dense) {
    if (o.to_stem && o.to_dense) return fail(cmd, Status::error("give --to-stem or --to-dense, not both"));
    if (!o.dtype.empty() || o.pack || o.tables_only)
      return fail(cmd, Status::error("--to-stem / --to-dense write F32; change the dtype or pack tables in a second "
                                     "`stem convert` of the result"));
    return run_arch(o);
  }
  if (o.dtype.empty() && !o.pack)
    return fail(cmd, Status::error("nothing to do: give --dtype (with --out) and/or --pack-tables"));
  // q8 is not a checkpoint dtype: with --pack-tables it packs the tables in 8 bits.
  const bool q8_pack = o.dtype == "q8";
  if (q8_pack && !o.pack)
    return fail(cmd, Status::error("--dtype q8: a checkpoint holds F32 or BF16; q8 packs the STEM tables in 8 bits "
                                   "with --pack-tables (tables.stem), and weight matrices load in 8 bits with "
                                   "--dtype q8 of generate, serve and bench"));
  if (q8_pack && !o.out_dir.empty())
    return fail(cmd, Status::error("--dtype q8 --pack-tables writes tables.stem beside --model; drop --out"));
  if (q8_pack && o.tables_only) return fail(cmd, Status::error("--tables-only needs --dtype f32 or bf16"));
  if (!o.dtype.empty() && !q8_pack && o.out_dir.empty())
    return fail(cmd, Status::error("--dtype writes a new checkpoint: give --out DIR"));
  if (o.tables_only && o.dtype.empty()) return fail(cmd, Status::error("--tables-only needs --dtype"));
  const auto t0 = std::chrono::steady_clock::now();
  auto src = resolve_model_dir(o.model_dir);  // a run directory: its latest checkpoint
  if (!src.ok()) return fail(cmd, src.status());
  std::string target = *src;
  nlohmann::json report = {{"model", *src}};
  if (!o.dtype.empty() && !q8_pack) {
    auto bytes = convert_checkpoint(*src, o.out_dir, *parse_weight_dtype(o.dtype), o.tables_only);
    if (!bytes.ok()) return fail(cmd, bytes.status());
    report["out"] = o.out_dir;
    report["dtype"] = o.dtype;
    report["tables_only"] = o.tables_only;
    report["weight_bytes"] = *bytes;
    target = o.out_dir;
  }
  if (o.pack) {
    auto packed = pack_checkpoint_tables(target, q8_pack);
    if (!packed.ok()) return fail(cmd, packed.status());
    report["packed_tables"] = *packed;
    report["packed_dtype"] = q8_pack ? "q8" : "as stored";
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report["seconds"] = secs;
  if (o.json) {
    print_json(report);
  } else {
    if (report.contains("out"))
      std::printf("wrote %s (%s%s, %.1f MB of weights)\n", o.out_dir.c_str(), o.dtype.c_str(),
                  o.tables_only ? ", tables only" : "", report["weight_bytes"].get<int64_t>() / 1e6);
    if (o.pack)
      std::printf("wrote %s%s\n", report["packed_tables"].get<std::string>().c_str(), q8_pack ? " (rows in Q8)" : "");
    std::printf("%.1fs\n", secs);
  }
  return 0;
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOpts>();
  CLI::App* sub = app.add_subcommand(
      "convert", "Store weights as BF16 or F32; pack STEM tables row-major; make dense layers STEM or back");
  sub->add_option("--model", o->model_dir, "Source model directory")->required();
  sub->add_option("--out", o->out_dir, "New model directory (with --dtype, --to-stem, --to-dense)");
  sub->add_option("--dtype", o->dtype,
                  "Storage dtype of the weight matrices (norms stay F32); q8 only with --pack-tables: the pack's "
                  "rows in 8 bits")
      ->check(CLI::IsMember({"f32", "bf16", "q8"}));
  sub->add_flag("--tables-only", o->tables_only, "Convert only the STEM tables; other weights keep their dtype");
  sub->add_flag("--pack-tables", o->pack,
                "Write tables.stem: the STEM tables row-major ([V][stem layers][f]), one read per token "
                "for --tables disk/mmap (into --out, or beside --model)");
  sub->add_flag("--to-stem", o->to_stem, "Make dense FFN layers STEM: up_proj replaced by a table (see --layers, --init)");
  sub->add_flag("--to-dense", o->to_dense,
                "Make STEM layers dense: up_proj fitted to each table by least squares over --data's FFN inputs");
  sub->add_option("--layers", o->arch.layers,
                  "Layers to change: 1,3,5 | every2 | every3 | all-but-first | full (default: all-but-first to "
                  "STEM, every STEM layer to dense)");
  sub->add_option("--init", o->init,
                  "New tables: embed (W_up E[t]), mean (W_up of token t's mean FFN input over --data), zero")
      ->check(CLI::IsMember({"embed", "mean", "zero"}))
      ->capture_default_str();
  sub->add_option("--data", o->arch.data_dir, "Prepared data directory whose training split is sampled (mean, --to-dense)");
  sub->add_option("--sample-tokens", o->arch.sample_tokens, "Tokens of that sample")->capture_default_str();
  sub->add_option("--seq", o->arch.seq, "Window length of the sample")->capture_default_str();
  sub->add_option("--ridge", o->arch.ridge, "--to-dense: ridge, a fraction of X^T X's mean eigenvalue")
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] { return run_convert(*o); });
}

}  // namespace stem::cli
