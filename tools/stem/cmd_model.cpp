// stem init / score / grad: make a checkpoint, score token ids with it, and take
// the gradient of that score for every parameter.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "stem/data.h"
#include "stem/model.h"

namespace stem::cli {
namespace fs = std::filesystem;

namespace {

// Errors about the ids themselves ("tokens: ...") name the file they came from.
Status tokens_context(const Status& st, const std::string& tokens_file) {
  return st.message().rfind("tokens:", 0) == 0 ? st.with_context(tokens_file) : st;
}

struct ModelInput {
  std::string model_dir, tokens_file;
  bool lines = false;
};

void add_input_options(CLI::App* sub, ModelInput& in) {
  sub->add_option("--model", in.model_dir, "Model directory (config.json, model.safetensors)")->required();
  sub->add_option("--tokens-file", in.tokens_file, "Whitespace-separated token ids")->required();
  sub->add_flag("--lines", in.lines, "Each non-empty line of the tokens file is its own sequence (equal lengths)");
}

}  // namespace

void register_init(CLI::App& app) {
  struct Opts {
    std::string config, out;
    uint64_t seed = 0;
    bool force = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("init", "Create a checkpoint with freshly initialised weights");
  sub->add_option("--config", o->config, "Model config.json (hyper-parameters)")->required();
  sub->add_option("--out", o->out, "Output model directory")->required();
  sub->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  sub->add_flag("--force", o->force, "Overwrite an existing model in --out");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    auto cfg = ModelConfig::load(o->config);
    if (!cfg.ok()) return fail("init", cfg.status());
    std::error_code ec;
    if (!o->force && fs::exists(fs::path(o->out) / "model.safetensors", ec))
      return fail("init", Status::error(o->out + ": already holds a model (use --force to overwrite)"));
    auto m = Model::init(*cfg, o->seed);
    if (!m.ok()) return fail("init", m.status());
    if (Status st = m->save(o->out); !st.ok()) return fail("init", st);
    const int64_t n = m->n_parameters();
    if (o->json)
      print_json({{"model", o->out}, {"parameters", n}, {"seed", o->seed}});
    else
      std::printf("wrote %s (%ld parameters, seed %lu)\n", o->out.c_str(), static_cast<long>(n),
                  static_cast<unsigned long>(o->seed));
    return 0;
  });
}

void register_score(CLI::App& app) {
  struct Opts {
    ModelInput in;
    std::string logits_out;
    bool json = false;
    LoadFlags load;
    std::vector<std::string> edits;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("score", "Mean next-token loss of token ids (and their logits)");
  add_input_options(sub, o->in);
  sub->add_option("--logits-out", o->logits_out, "Write the logits [B*T, V] as float32 .npy");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_load_flags(sub, &o->load);
  add_edit_option(sub, &o->edits);
  add_command(sub, [o] {
    auto m = Model::load(o->in.model_dir, o->load.options());
    if (!m.ok()) return fail("score", m.status());
    if (Status st = apply_edits(*m, o->edits); !st.ok()) return fail("score", st);
    auto batch = read_token_batch(o->in.tokens_file, m->config().vocab_size, o->in.lines);
    if (!batch.ok()) return fail("score", batch.status());
    const int64_t B = batch->B, T = batch->T;
    HostTensor logits{{B * T, m->config().vocab_size}, {}};
    auto loss = m->score(batch->ids, B, T, o->logits_out.empty() ? nullptr : &logits.data);
    if (!loss.ok()) return fail("score", tokens_context(loss.status(), o->in.tokens_file));
    if (!o->logits_out.empty()) {
      if (Status st = write_npy(o->logits_out, logits); !st.ok()) return fail("score", st);
    }
    const int64_t n_pred = B * (T - 1);
    if (o->json) {
      nlohmann::json j = {{"loss", *loss}, {"perplexity", std::exp(*loss)}, {"sequences", B},
                          {"tokens", B * T}, {"predicted", n_pred}};
      if (!o->logits_out.empty()) j["logits"] = o->logits_out;
      print_json(j);
    } else {
      std::printf("loss %.6f  perplexity %.3f  (%ld predicted tokens)\n", *loss, std::exp(*loss),
                  static_cast<long>(n_pred));
    }
    return 0;
  });
}

void register_grad(CLI::App& app) {
  struct Opts {
    ModelInput in;
    std::string out;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("grad", "Gradient of the mean loss for every parameter");
  add_input_options(sub, o->in);
  sub->add_option("--out", o->out, "Output .safetensors (one F32 tensor per parameter, same names)")->required();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    auto m = Model::load(o->in.model_dir);
    if (!m.ok()) return fail("grad", m.status());
    auto batch = read_token_batch(o->in.tokens_file, m->config().vocab_size, o->in.lines);
    if (!batch.ok()) return fail("grad", batch.status());
    std::map<std::string, HostTensor> grads;
    auto loss = m->grad(batch->ids, batch->B, batch->T, &grads);
    if (!loss.ok()) return fail("grad", tokens_context(loss.status(), o->in.tokens_file));
    std::vector<std::pair<std::string, const HostTensor*>> items;
    double sq = 0;
    for (const std::string& name : m->tensor_names()) {  // the model's tensor order
      auto it = grads.find(name);
      if (it == grads.end()) continue;
      items.emplace_back(name, &it->second);
      for (float x : it->second.data) sq += static_cast<double>(x) * x;
    }
    if (Status st = write_safetensors(o->out, items); !st.ok()) return fail("grad", st);
    if (o->json)
      print_json({{"loss", *loss}, {"grad_norm", std::sqrt(sq)}, {"tensors", items.size()}, {"out", o->out}});
    else
      std::printf("loss %.6f  grad norm %.6g  wrote %zu tensors to %s\n", *loss, std::sqrt(sq),
                  items.size(), o->out.c_str());
    return 0;
  });
}

}  // namespace stem::cli
