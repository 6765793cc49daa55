// stem edit apply|show: merging overlays into a new checkpoint, and what an
// overlay holds (the rest of `stem edit` is in cmd_edit.cpp and
// cmd_edit_measure.cpp).
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "edit_cli.h"
#include "stem/edit.h"

namespace stem::cli {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- apply

void register_apply(CLI::App* edit) {
  struct Opts {
    std::string model_dir, out;
    std::vector<std::string> edits;
    bool force = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("apply", "Merge overlays into a new checkpoint directory");
  sub->add_option("--model", o->model_dir, "Base model directory (never changed)")->required();
  sub->add_option("--edit", o->edits, "Overlay file(s), applied in order")->required()->expected(1, -1);
  sub->add_option("--out", o->out, "New model directory (config.json, model.safetensors, tokenizer.model)")->required();
  sub->add_flag("--force", o->force, "Overwrite a model already in --out");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit apply";
    std::error_code ec;
    if (fs::exists(o->out, ec) && fs::equivalent(o->out, o->model_dir, ec))
      return fail(cmd, Status::error("--out " + o->out + " is the base model directory: edits never change a "
                                     "checkpoint in place, write a new directory"));
    if (!o->force && fs::exists(fs::path(o->out) / "model.safetensors", ec))
      return fail(cmd, Status::error(o->out + ": already holds a model (use --force to overwrite)"));
    auto m = Model::load(o->model_dir);
    if (!m.ok()) return fail(cmd, m.status());
    auto applied = apply_overlays(*m, o->edits);
    if (!applied.ok()) return fail(cmd, applied.status());
    if (Status st = m->save(o->out); !st.ok()) return fail(cmd, st);
    const size_t rows = applied->rows();
    if (o->json) {
      print_json({{"model", o->model_dir}, {"edits", o->edits}, {"rows", rows}, {"out", o->out}});
      return 0;
    }
    std::printf("applied %zu overlay(s), %zu rows, to %s; wrote %s\n", o->edits.size(), rows, o->model_dir.c_str(),
                o->out.c_str());
    return 0;
  });
}

// ---------------------------------------------------------------- show

void register_show(CLI::App* edit) {
  struct Opts {
    std::string file, model_dir;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("show", "What an overlay holds (shape, provenance, rows)");
  sub->add_option("--edit", o->file, "Overlay file")->required();
  sub->add_option("--model", o->model_dir, "Also check it against this model and name its tokens");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit show";
    auto ov = edit::read_overlay(o->file);
    if (!ov.ok()) return fail(cmd, ov.status());
    std::optional<Loaded> lm;
    if (!o->model_dir.empty()) {
      auto l = load_model_and_tokenizer(o->model_dir);
      if (!l.ok()) return fail(cmd, l.status());
      if (Status st = edit::check_overlay(*ov, l->model.config(), o->file); !st.ok()) return fail(cmd, st);
      lm.emplace(std::move(*l));
    }
    std::map<int32_t, std::vector<int32_t>> by_layer;
    for (const auto& k : ov->keys) by_layer[k.layer].push_back(k.token);
    nlohmann::json note = nlohmann::json::parse(ov->note, nullptr, false);
    if (o->json) {
      nlohmann::json layers = nlohmann::json::object();
      for (const auto& [l, toks] : by_layer)
        layers[std::to_string(l)] = lm ? tokens_json(lm->tok, toks) : nlohmann::json(toks);
      print_json({{"file", o->file}, {"version", edit::kOverlayVersion},
                  {"shape", {{"vocab_size", ov->shape.vocab_size}, {"row_width", ov->shape.row_width},
                             {"num_hidden_layers", ov->shape.n_layers}, {"stem_layers", ov->shape.stem_layers}}},
                  {"note", note.is_discarded() ? nlohmann::json(ov->note) : note}, {"rows", ov->size()},
                  {"layers", layers}});
      return 0;
    }
    std::printf("%s: overlay v%u for V=%ld f=%ld L=%ld (STEM layers %s), %zu rows\n", o->file.c_str(),
                edit::kOverlayVersion, static_cast<long>(ov->shape.vocab_size), static_cast<long>(ov->shape.row_width),
                static_cast<long>(ov->shape.n_layers), join_ints(ov->shape.stem_layers).c_str(), ov->size());
    if (!ov->note.empty()) std::printf("  note: %s\n", ov->note.c_str());
    for (const auto& [l, toks] : by_layer) {
      std::string s;
      for (int32_t t : toks) s += " " + (lm ? lm->tok.piece(t) + "(" + std::to_string(t) + ")" : std::to_string(t));
      std::printf("  layer %d:%s\n", l, s.c_str());
    }
    return 0;
  });
}

}  // namespace stem::cli
