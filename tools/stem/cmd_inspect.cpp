// stem inspect: parameters by kind and per layer, active parameters per token,
// FLOPs per token for a training step and for one decode step, and the weight
// bytes read to decode a token. Reads --model DIR (its config.json; the weights
// are checked too) or just --config.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "stem/accounting.h"
#include "stem/model.h"

namespace stem::cli {

namespace {
std::string human(double x) {
  const char* units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (std::abs(x) >= 1000.0 && u < 5) {
    x /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f%s" : "%.0f%s", x, units[u]);
  return buf;
}
}  // namespace

void register_inspect(CLI::App& app) {
  struct Opts {
    std::string model, config;
    int64_t context = 0, seq = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("inspect", "Parameters, FLOPs and bytes per token of a model");
  auto* mo = sub->add_option("--model", o->model, "Model directory");
  auto* co = sub->add_option("--config", o->config, "A config.json instead of a model directory");
  mo->excludes(co);
  sub->add_option("--context", o->context, "Context length for decode FLOPs and KV bytes (default: max_position_embeddings)");
  sub->add_option("--seq", o->seq, "Training sequence length for train FLOPs (default: max_position_embeddings)");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    if (o->model.empty() && o->config.empty())
      return fail("inspect", Status::error("give --model DIR or --config FILE"));
    ModelConfig cfg;
    if (!o->model.empty()) {
      auto m = Model::load(o->model);
      if (!m.ok()) return fail("inspect", m.status());
      cfg = m->config();
    } else {
      auto c = ModelConfig::load(o->config);
      if (!c.ok()) return fail("inspect", c.status());
      cfg = *c;
    }
    const int64_t ctx = o->context > 0 ? o->context : cfg.max_position_embeddings;
    const int64_t seq = o->seq > 0 ? o->seq : cfg.max_position_embeddings;
    const Account a = account(cfg, seq, ctx);
    if (o->json) {
      nlohmann::json kinds = nlohmann::json::object();
      for (auto& [k, n] : a.params_by_kind) kinds[k] = n;
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& L : a.layers)
        layers.push_back({{"layer", L.layer}, {"ffn_type", ffn_type_name(L.type)},
                          {"params_attention", L.params_attention}, {"params_norm", L.params_norm},
                          {"params_ffn", L.params_ffn}, {"params_table", L.params_table},
                          {"active_params", L.active_params}, {"fwd_flops_per_token", L.fwd_flops_matmul}});
      print_json({{"params_total", a.params_total}, {"params_by_kind", kinds},
                  {"active_params_per_token", a.active_params},
                  {"train_flops_per_token", a.train_flops_per_token}, {"train_seq", seq},
                  {"decode_flops_per_token", a.decode_flops_per_token}, {"context", ctx},
                  {"decode_weight_bytes_per_token", a.decode_weight_bytes},
                  {"decode_kv_bytes_per_token", a.decode_kv_bytes}, {"layers", layers}});
      return 0;
    }
    std::printf("model: V=%ld d=%ld f=%ld L=%ld H=%ld Hkv=%ld hd=%ld E=%ld%s\n",
                static_cast<long>(cfg.vocab_size), static_cast<long>(cfg.hidden_size),
                static_cast<long>(cfg.intermediate_size), static_cast<long>(cfg.num_hidden_layers),
                static_cast<long>(cfg.num_attention_heads), static_cast<long>(cfg.num_key_value_heads),
                static_cast<long>(cfg.head_dim()), static_cast<long>(cfg.num_hash_experts),
                cfg.tie_word_embeddings ? " (tied embeddings)" : "");
    std::printf("\nparameters: %s total\n", human(static_cast<double>(a.params_total)).c_str());
    for (auto& [k, n] : a.params_by_kind)
      std::printf("  %-16s %12ld  (%5.1f%%)\n", k.c_str(), static_cast<long>(n),
                  100.0 * static_cast<double>(n) / static_cast<double>(a.params_total));
    std::printf("\nper token:\n");
    std::printf("  active parameters        %s\n", human(static_cast<double>(a.active_params)).c_str());
    std::printf("  training step FLOPs      %s  (fwd+bwd, seq %ld)\n", human(a.train_flops_per_token).c_str(), static_cast<long>(seq));
    std::printf("  decode FLOPs             %s  (context %ld)\n", human(a.decode_flops_per_token).c_str(), static_cast<long>(ctx));
    std::printf("  decode weight bytes      %sB (F32)\n", human(a.decode_weight_bytes).c_str());
    std::printf("  decode KV-cache bytes    %sB (context %ld)\n", human(a.decode_kv_bytes).c_str(), static_cast<long>(ctx));
    std::printf("\n%5s %-9s %12s %12s %12s %12s %12s\n", "layer", "ffn", "attention", "ffn", "table",
                "active/tok", "fwd FLOP/tok");
    for (const auto& L : a.layers)
      std::printf("%5d %-9s %12ld %12ld %12ld %12ld %12s\n", L.layer, ffn_type_name(L.type),
                  static_cast<long>(L.params_attention), static_cast<long>(L.params_ffn),
                  static_cast<long>(L.params_table), static_cast<long>(L.active_params),
                  human(L.fwd_flops_matmul).c_str());
    return 0;
  });
}

}  // namespace stem::cli
