// Parameter groups, the options a resume repeats, and --init-from (see run_options.h).
#include "train/run_options.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace stem::train {
namespace fs = std::filesystem;

TrainOptions resolve_groups(TrainOptions o) {
  if (std::isnan(o.lr_tables)) o.lr_tables = o.lr;
  if (o.warmup_tables < 0) o.warmup_tables = o.warmup;
  if (std::isnan(o.weight_decay_tables)) o.weight_decay_tables = o.weight_decay;
  return o;
}

Status check_option_ranges(const TrainOptions& o) {
  struct Range {
    bool ok;
    const char* flag;
    double value;
    const char* need;
  };
  const bool kd = !o.teacher.empty();
  const Range ranges[] = {
      {o.steps >= 1, "--steps", static_cast<double>(o.steps), ">= 1"},
      {o.batch >= 1, "--batch", static_cast<double>(o.batch), ">= 1"},
      {o.seq >= 2, "--seq", static_cast<double>(o.seq), ">= 2"},
      {o.accum >= 1, "--accum", static_cast<double>(o.accum), ">= 1"},
      {o.lr > 0, "--lr", o.lr, "> 0"},
      {o.warmup >= 0, "--warmup", static_cast<double>(o.warmup), ">= 0"},
      {o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "--min-lr-ratio", o.min_lr_ratio, "in [0, 1]"},
      {o.lr_tables > 0, "--lr-tables", o.lr_tables, "> 0"},
      {o.warmup_tables >= 0, "--warmup-tables", static_cast<double>(o.warmup_tables), ">= 0"},
      {o.weight_decay_tables >= 0, "--wd-tables", o.weight_decay_tables, ">= 0"},
      {o.freeze_backbone_steps >= 0 && o.freeze_backbone_steps < o.steps, "--freeze-backbone-steps",
       static_cast<double>(o.freeze_backbone_steps), "in [0, --steps)"},
      {!kd || (o.distill_alpha >= 0 && o.distill_alpha <= 1), "--distill-alpha", o.distill_alpha, "in [0, 1]"},
      {!kd || o.distill_temperature > 0, "--distill-temperature", o.distill_temperature, "> 0"},
      {o.rope_theta >= 0, "--rope-theta", o.rope_theta, "> 0"},
      {o.zero_stage == 0 || o.zero_stage == 1, "--zero", static_cast<double>(o.zero_stage), "0 or 1"},
  };
  for (const Range& r : ranges) {
    if (r.ok) continue;  // NaN fails every comparison, so it lands here too
    char value[32];
    std::snprintf(value, sizeof value, "%g", r.value);
    return Status::error(std::string("train: ") + r.flag + " = " + value + " (need " + r.need + ")");
  }
  return ok_status();
}

GroupRates group_rates(const TrainOptions& o, int64_t t) {
  GroupRates r;
  r.tables = lr_at(t, o.steps, o.warmup_tables, o.lr_tables, o.min_lr_ratio);
  const int64_t K = o.freeze_backbone_steps;
  r.backbone = t <= K ? 0.0f : lr_at(t - K, std::max<int64_t>(1, o.steps - K), o.warmup, o.lr, o.min_lr_ratio);
  return r;
}

nlohmann::json run_options_json(const TrainOptions& o) {
  return {{"lr", o.lr},
          {"warmup", o.warmup},
          {"min_lr_ratio", o.min_lr_ratio},
          {"weight_decay", o.weight_decay},
          {"lr_tables", o.lr_tables},
          {"warmup_tables", o.warmup_tables},
          {"weight_decay_tables", o.weight_decay_tables},
          {"clip", o.clip},
          {"clip_stem", o.clip_stem},
          {"freeze_backbone_steps", o.freeze_backbone_steps},
          {"lazy_tables", o.lazy_tables},
          {"teacher", o.teacher},
          {"distill_alpha", o.teacher.empty() ? 0.0f : o.distill_alpha},
          {"distill_temperature", o.teacher.empty() ? 1.0f : o.distill_temperature},
          {"doc_mask", o.doc_mask},
          {"precision", precision_name(o.precision)}};
}

Status check_resume_options(const nlohmann::json& saved, const nlohmann::json& now, const std::string& ckpt) {
  if (!saved.is_object()) return ok_status();
  for (const auto& [key, value] : now.items()) {
    const auto it = saved.find(key);
    if (it == saved.end() || *it == value) continue;
    if (it->is_number() && value.is_number() && it->get<double>() == value.get<double>()) continue;
    return Status::error("resume: " + ckpt + "/trainer_state.json has " + key + " = " + it->dump() +
                         ", this run gives " + value.dump() +
                         "; resume with the same options (or start a new run from its weights with --init-from)");
  }
  return ok_status();
}

Status load_initial_weights(const std::string& dir, model::TensorList& w) {
  STEM_ASSIGN_OR_RETURN(std::string src, resolve_model_dir(dir));
  const std::string cfg_path = (fs::path(src) / "config.json").string();
  STEM_ASSIGN_OR_RETURN(ModelConfig from, ModelConfig::load(cfg_path));
  const std::string path = (fs::path(src) / "model.safetensors").string();
  model::LoadOptions lo;  // tables empty in w are a rank's to read, its rows only
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i].empty() && w.spec(i).kind == model::ParamKind::StemTable) lo.skip_tables = true;
  STEM_ASSIGN_OR_RETURN(model::TensorList loaded, model::load_weights(from, path, lo));
  const std::string where = "--init-from " + src + ": ";
  if (loaded.size() != w.size())
    return Status::error(where + "its model has " + std::to_string(loaded.size()) + " tensors, this run's " +
                         std::to_string(w.size()) + " (another architecture? convert it first: stem convert)");
  for (size_t i = 0; i < w.size(); ++i) {
    const model::TensorSpec& s = w.spec(i);
    const int j = loaded.find(s.name);
    if (j < 0)
      return Status::error(where + "has no tensor '" + s.name + "' (another architecture? convert it first: stem convert)");
    if (w[i].empty()) continue;
    if (loaded[j].shape() != w[i].shape() || loaded[j].dtype() != w[i].dtype())
      return Status::error(where + "tensor '" + s.name + "' is " + shape_str(loaded[j].shape()) + ", this run's " +
                           shape_str(w[i].shape()));
    std::memcpy(w[i].raw(), loaded[j].raw(), w[i].nbytes());
  }
  return ok_status();
}

}  // namespace stem::train
