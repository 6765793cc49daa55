// stem analyze: what STEM tables hold (stem/analyze.h).
//   spread    pairwise cosine statistics of each STEM layer's rows against the
//             dense up-projection outputs W_up x collected on text
//   capacity  distinct STEM parameters activated as the context grows
// Data (--data) is a text file (tokenized with the model's tokenizer), a .tok
// shard, or a data directory (its val.tok). It does not plot; --json gives
// the histograms for plotting elsewhere.
#include <cstdio>
#include <optional>
#include <set>

#include "commands.h"
#include "stem/analyze.h"
#include "stem/data.h"

namespace stem::cli {

namespace {

// Token ids of `path` for `m`; text goes through the model's tokenizer.
Result<std::vector<int32_t>> load_ids(const std::string& path, const Model& m) {
  return read_corpus_tokens(path, m.dir(), m.config().vocab_size);
}

nlohmann::json stats_json(const edit::CosineStats& s) {
  return {{"vectors", s.vectors}, {"pairs", s.pairs}, {"sampled", s.sampled}, {"mean_cos", s.mean_cos},
          {"mean_abs_cos", s.mean_abs_cos}, {"p95_abs_cos", s.p95_abs_cos}, {"histogram", s.histogram}};
}

void register_spread(CLI::App* an) {
  struct Opts {
    std::string model_dir, data, dense_model, rows = "auto";
    int64_t pairs = 200000, max_positions = 4096;
    int bins = 20;
    uint64_t seed = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = an->add_subcommand("spread", "Angular spread of STEM rows against dense up-projection outputs");
  sub->add_option("--model", o->model_dir, "Model directory")->required();
  sub->add_option("--data", o->data, "Text file, .tok shard or data directory: positions for W_up x, tokens for rows");
  sub->add_option("--dense-model", o->dense_model,
                  "Take W_up x from this model's dense layers instead (e.g. a dense twin of the same shape)");
  sub->add_option("--rows", o->rows,
                  "STEM rows compared: data (tokens occurring in --data) | all (every row) | auto (data when given)")
      ->capture_default_str();
  sub->add_option("--pairs", o->pairs, "Pairs measured per layer at most (random pairs beyond)")->capture_default_str();
  sub->add_option("--max-positions", o->max_positions, "Positions of --data used for W_up x")->capture_default_str();
  sub->add_option("--bins", o->bins, "Histogram bins over cos in [-1, 1]")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the pair sample")->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output (with histograms)");
  add_command(sub, [o] {
    const char* cmd = "analyze spread";
    if (o->pairs < 1 || o->bins < 1 || o->max_positions < 2)
      return fail(cmd, Status::error("need --pairs >= 1, --bins >= 1, --max-positions >= 2"));
    if (o->rows != "auto" && o->rows != "data" && o->rows != "all")
      return fail(cmd, Status::error("--rows: '" + o->rows + "' is not one of data, all, auto"));
    if (o->rows == "data" && o->data.empty()) return fail(cmd, Status::error("--rows data needs --data"));
    auto m = Model::load(o->model_dir);
    if (!m.ok()) return fail(cmd, m.status());
    const ModelConfig& cfg = m->config();
    if (cfg.n_stem_layers() == 0 && o->dense_model.empty())
      return fail(cmd, Status::error(o->model_dir + ": the model has no STEM layers"));
    std::vector<int32_t> ids;
    if (!o->data.empty()) {
      auto r = load_ids(o->data, *m);
      if (!r.ok()) return fail(cmd, r.status());
      ids = std::move(*r);
    }
    const bool data_rows = o->rows == "data" || (o->rows == "auto" && !ids.empty());
    std::vector<int32_t> tokens;
    if (data_rows) {
      std::set<int32_t> s(ids.begin(), ids.end());
      tokens.assign(s.begin(), s.end());
    }
    nlohmann::json layers = nlohmann::json::array();
    std::vector<std::tuple<int, std::string, edit::CosineStats>> rows;
    Progress bar("spread", cfg.num_hidden_layers + 1);
    int64_t done = 0;
    for (int l = 0; l < cfg.num_hidden_layers; ++l) {
      if (cfg.ffn_types[l] != FfnType::Stem) continue;
      auto r = edit::stem_rows_of(*m, l, tokens);
      if (!r.ok()) return fail(cmd, r.status());
      const int64_t n = static_cast<int64_t>(r->size()) / cfg.intermediate_size;
      rows.emplace_back(l, "stem", edit::cosine_stats(r->data(), n, cfg.intermediate_size, o->pairs, o->seed + l, o->bins));
      bar.update(++done);
    }
    std::string dense_note;
    if (ids.empty()) {
      dense_note = "no --data: no dense W_up x to compare with";
    } else {
      std::optional<Model> dm;
      if (!o->dense_model.empty()) {
        auto d = Model::load(o->dense_model);
        if (!d.ok()) return fail(cmd, d.status());
        if (d->config().vocab_size != cfg.vocab_size)
          return fail(cmd, Status::error(o->dense_model + ": vocab_size " + std::to_string(d->config().vocab_size) +
                                         " differs from the model's " + std::to_string(cfg.vocab_size) +
                                         " (the same --data must fit both)"));
        dm.emplace(std::move(*d));
      }
      Model& src = dm ? *dm : *m;
      const int64_t window = std::min<int64_t>(256, src.config().max_position_embeddings);
      const auto ups = edit::dense_up_outputs(src, ids, window, o->max_positions);
      for (const auto& [l, u] : ups) {
        const int64_t f = src.config().intermediate_size;
        rows.emplace_back(l, dm ? "dense (--dense-model)" : "dense",
                          edit::cosine_stats(u.data(), static_cast<int64_t>(u.size()) / f, f, o->pairs,
                                             o->seed + 1000 + l, o->bins));
      }
      if (ups.empty())
        dense_note = (dm ? o->dense_model : o->model_dir) +
                     " has no dense layers: no W_up x to compare with (give --dense-model DIR)";
    }
    bar.finish();
    if (o->json) {
      for (const auto& [l, kind, s] : rows) layers.push_back({{"layer", l}, {"kind", kind}, {"stats", stats_json(s)}});
      nlohmann::json j = {{"model", o->model_dir}, {"rows", data_rows ? "data" : "all"}, {"bins", o->bins},
                          {"layers", layers}};
      if (!dense_note.empty()) j["note"] = dense_note;
      print_json(j);
      return 0;
    }
    std::printf("STEM rows: %s; dense: W_up x at up to %ld positions of %s\n",
                data_rows ? ("the " + std::to_string(tokens.size()) + " distinct tokens of --data").c_str()
                          : "every row of each table",
                static_cast<long>(o->max_positions), o->data.empty() ? "(no data)" : o->data.c_str());
    std::printf("%-5s %-22s %8s %9s %9s %10s %9s\n", "layer", "kind", "vectors", "pairs", "mean cos", "mean|cos|",
                "P95|cos|");
    for (const auto& [l, kind, s] : rows)
      std::printf("%-5d %-22s %8ld %9ld %9.4f %10.4f %9.4f%s\n", l, kind.c_str(), static_cast<long>(s.vectors),
                  static_cast<long>(s.pairs), s.mean_cos, s.mean_abs_cos, s.p95_abs_cos, s.sampled ? " (sampled)" : "");
    if (!dense_note.empty()) std::printf("note: %s\n", dense_note.c_str());
    return 0;
  });
}

void register_capacity(CLI::App* an) {
  struct Opts {
    std::string model_dir, data;
    int64_t max_context = 0, windows = 8;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = an->add_subcommand("capacity", "Distinct STEM parameters activated as the context grows");
  sub->add_option("--model", o->model_dir, "Model directory")->required();
  sub->add_option("--data", o->data, "Text file, .tok shard or data directory")->required();
  sub->add_option("--max-context", o->max_context, "Longest context (default: max_position_embeddings)");
  sub->add_option("--windows", o->windows, "Windows averaged per context length")->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "analyze capacity";
    auto m = Model::load(o->model_dir);
    if (!m.ok()) return fail(cmd, m.status());
    const ModelConfig& cfg = m->config();
    auto ids = load_ids(o->data, *m);
    if (!ids.ok()) return fail(cmd, ids.status());
    const int64_t top = o->max_context > 0 ? o->max_context : cfg.max_position_embeddings;
    auto curve = edit::capacity_curve(cfg, *ids, top, o->windows);
    if (!curve.ok()) return fail(cmd, curve.status());
    const double dense_up = static_cast<double>(cfg.hidden_size * cfg.intermediate_size * cfg.n_stem_layers());
    if (o->json) {
      nlohmann::json pts = nlohmann::json::array();
      for (const auto& p : *curve)
        pts.push_back({{"context", p.context}, {"distinct_tokens", p.distinct_tokens}, {"stem_params", p.stem_params},
                       {"table_fraction", p.table_fraction}, {"vs_dense_up", p.stem_params / dense_up}});
      print_json({{"model", o->model_dir}, {"data", o->data}, {"tokens", ids->size()}, {"windows", o->windows},
                  {"stem_layers", cfg.n_stem_layers()}, {"row_width", cfg.intermediate_size},
                  {"dense_up_params", dense_up}, {"points", pts}});
      return 0;
    }
    std::printf("%s: %zu tokens; %ld STEM layers x f=%ld; a dense up-projection in those layers holds %.0f params\n",
                o->data.c_str(), ids->size(), static_cast<long>(cfg.n_stem_layers()),
                static_cast<long>(cfg.intermediate_size), dense_up);
    std::printf("%8s %16s %20s %10s %10s\n", "context", "distinct tokens", "STEM params active", "of tables", "/ dense up");
    for (const auto& p : *curve)
      std::printf("%8ld %16.1f %20.0f %9.2f%% %10.2f\n", static_cast<long>(p.context), p.distinct_tokens, p.stem_params,
                  100 * p.table_fraction, p.stem_params / dense_up);
    return 0;
  });
}

}  // namespace

void register_analyze(CLI::App& app) {
  CLI::App* an = app.add_subcommand("analyze", "Analyses of STEM tables: angular spread, context capacity");
  an->require_subcommand(1);
  register_spread(an);
  register_capacity(an);
}

}  // namespace stem::cli
