// Checkpoint save/load for training runs (see checkpoint.h).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/files.h"
#include "io/safetensors.h"

namespace stem::train {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFormat = "stem.trainer_state";
constexpr int kStateVersion = 1;

// Deletes a checkpoint so that a crash at any moment leaves either the whole
// directory or none under its name: rename to a hidden temporary (atomic), then
// remove that (latest_checkpoint() sweeps temporaries left by a crash).
void remove_checkpoint_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  const fs::path doomed = dir.parent_path() / (".tmp-del-" + dir.filename().string() + "-" + std::to_string(::getpid()));
  fs::rename(dir, doomed, ec);
  fs::remove_all(ec ? dir : doomed, ec);
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// A folder's entries made durable (io::fsync_dir): a checkpoint whose
// entries the disk did not take must not be reported saved.
Status fsync_dir(const fs::path& dir) { return io::fsync_dir(dir.string()); }

}  // namespace

Status save_checkpoint(const std::string& run_dir, const ModelConfig& cfg,
                       const model::TensorList& weights, const std::string& tokenizer_path,
                       const AdamW& opt, const TrainerState& st, int keep, const StateStream& stream) {
  const fs::path ckdir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(ckdir, ec);
  if (ec) return Status::error(ckdir.string() + ": cannot create: " + ec.message());
  const std::string name = step_name(st.step);
  const fs::path tmp = ckdir / (".tmp-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return Status::error(tmp.string() + ": cannot create: " + ec.message());
  auto cleanup = [&](Status s) {
    fs::remove_all(tmp, ec);
    return s.with_context("checkpoint step " + std::to_string(st.step));
  };

  // The model directory (the contract's format).
  if (Status s = cfg.save((tmp / "config.json").string()); !s.ok()) return cleanup(s);
  // Lazy tables go out with their pending decay applied; those on disk come
  // from the stream, those in memory from a copy, a block of rows at a time.
  const model::TensorStream weights_stream = [&](size_t i, const io::ByteSink& sink) -> Status {
    if (weights[i].empty()) return stream ? stream(i, 0, sink) : Status::error("no stream for " + weights.spec(i).name);
    const int64_t R = weights.spec(i).shape[0], C = weights.spec(i).shape[1];
    constexpr int64_t kRows = 256;
    std::vector<float> buf(static_cast<size_t>(std::min(kRows, R) * C));
    for (int64_t r0 = 0; r0 < R; r0 += kRows) {
      const int64_t n = std::min(kRows, R - r0);
      std::memcpy(buf.data(), weights[i].f32() + r0 * C, sizeof(float) * n * C);
      opt.apply_pending(i, r0, n, 0, buf.data());
      STEM_RETURN_IF_ERROR(sink(buf.data(), sizeof(float) * n * C));
    }
    return ok_status();
  };
  if (Status s = model::save_weights(weights, (tmp / "model.safetensors").string(), weights_stream,
                                     [&opt](size_t i) { return opt.lazy(i); });
      !s.ok())
    return cleanup(s);
  if (!tokenizer_path.empty()) {
    auto bytes = io::read_text(tokenizer_path);
    if (!bytes.ok()) return cleanup(bytes.status());
    if (Status s = io::write_text_atomic((tmp / "tokenizer.model").string(), *bytes); !s.ok()) return cleanup(s);
  }
  // Optimizer: moments and lazy-row bookkeeping, by tensor name.
  std::vector<io::SafetensorsItem> items;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& s = weights.spec(i);
    if (!s.trainable) continue;
    for (int kind : {1, 2}) {
      const Tensor& t = kind == 1 ? opt.m()[i] : opt.v()[i];
      io::SafetensorsItem it{(kind == 1 ? "m." : "v.") + s.name, DType::F32, s.shape, t.raw()};
      if (t.empty() && stream)
        it.produce = [&stream, i, kind](const io::ByteSink& sink) { return stream(i, kind, sink); };
      items.push_back(std::move(it));
    }
    if (!opt.last_step()[i].empty())
      items.push_back({"last." + s.name, DType::I32, opt.last_step()[i].shape(), opt.last_step()[i].raw()});
    if (opt.lazy(i)) {  // the weights as the optimizer holds them (model.safetensors has them decayed)
      io::SafetensorsItem it{"p." + s.name, DType::F32, s.shape, weights[i].raw()};
      if (weights[i].empty() && stream)
        it.produce = [&stream, i](const io::ByteSink& sink) { return stream(i, 3, sink); };
      items.push_back(std::move(it));
    }
  }
  if (Status s = io::write_safetensors((tmp / "optimizer.safetensors").string(), items,
                                       {{"format", "stem.optimizer"}, {"version", "2"}});
      !s.ok())
    return cleanup(s);
  nlohmann::json j = {{"format", kStateFormat},      {"version", kStateVersion},
                      {"step", st.step},             {"tokens", st.tokens},
                      {"data_rng", st.data_rng},     {"optimizer_step", opt.steps()},
                      {"decay_products", opt.decay_products()}, {"last_val_loss", st.last_val_loss}};
  if (!st.options.is_null()) j["options"] = st.options;
  if (Status s = io::write_text_atomic((tmp / "trainer_state.json").string(), j.dump(1)); !s.ok()) return cleanup(s);
  if (Status s = fsync_dir(tmp); !s.ok()) return cleanup(s);

  const fs::path final_dir = ckdir / name;
  remove_checkpoint_dir(final_dir);  // the same step from an earlier, abandoned attempt
  fs::rename(tmp, final_dir, ec);
  if (ec) return cleanup(Status::error(final_dir.string() + ": rename failed: " + ec.message()));
  STEM_RETURN_IF_ERROR(fsync_dir(ckdir));
  STEM_RETURN_IF_ERROR(io::write_text_atomic((fs::path(run_dir) / "latest").string(), name + "\n"));

  if (keep > 0) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(ckdir, ec))
      if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
        names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    for (size_t i = 0; i + static_cast<size_t>(keep) < names.size(); ++i)
      if (names[i] != name) remove_checkpoint_dir(ckdir / names[i]);
  }
  return ok_status();
}

Result<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path ckdir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(ckdir, ec)) return std::string();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(ckdir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".tmp-", 0) == 0) fs::remove_all(e.path(), ec);  // an interrupted save
    else if (e.is_directory() && n.rfind("step-", 0) == 0 && fs::exists(e.path() / "trainer_state.json"))
      names.push_back(n);
  }
  if (names.empty()) return std::string();
  std::string pick = *std::max_element(names.begin(), names.end());
  auto latest = io::read_text((fs::path(run_dir) / "latest").string());
  if (latest.ok()) {
    std::string n = *latest;
    while (!n.empty() && (n.back() == '\n' || n.back() == ' ')) n.pop_back();
    if (std::find(names.begin(), names.end(), n) != names.end()) pick = n;
  }
  return (ckdir / pick).string();
}

Status load_checkpoint(const std::string& ckpt_dir, const ModelConfig& cfg,
                       model::TensorList& weights, AdamW& opt, TrainerState& st) {
  const std::string where = ckpt_dir;
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text((fs::path(ckpt_dir) / "trainer_state.json").string()));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return Status::error(where + "/trainer_state.json: not valid JSON: " + e.what());
  }
  if (!j.is_object()) return Status::error(where + "/trainer_state.json: not a JSON object");
  // Read without json::value(), which throws when a field has another type.
  const auto format = j.find("format"), version = j.find("version");
  const std::string f = format != j.end() && format->is_string() ? format->get<std::string>() : "?";
  const int64_t v = version != j.end() && version->is_number_integer() ? version->get<int64_t>() : 0;
  if (f != kStateFormat || v != kStateVersion)
    return Status::error(where + "/trainer_state.json: format '" + f + "' version " + std::to_string(v) +
                         " is not " + kStateFormat + " version " + std::to_string(kStateVersion));
  try {
    st.step = j.at("step").get<int64_t>();
    st.tokens = j.at("tokens").get<int64_t>();
    st.data_rng = j.at("data_rng").get<std::string>();
    st.last_val_loss = j.value("last_val_loss", 0.0);
    opt.set_steps(j.at("optimizer_step").get<int64_t>());
    opt.decay_products() = j.at("decay_products").get<std::vector<double>>();
    const auto options = j.find("options");
    st.options = options != j.end() && options->is_object() ? *options : nlohmann::json();
  } catch (const std::exception& e) {
    return Status::error(where + "/trainer_state.json: " + e.what());
  }
  if (static_cast<int64_t>(opt.decay_products().size()) != opt.steps() + 1)
    return Status::error(where + "/trainer_state.json: decay_products has " +
                         std::to_string(opt.decay_products().size()) + " entries for " +
                         std::to_string(opt.steps()) + " steps");
  // Tables empty in `weights` are kept elsewhere (a rank's shard, which reads
  // its own rows of them): they are not read here.
  model::LoadOptions lo;
  for (size_t i = 0; i < weights.size(); ++i)
    if (weights[i].empty() && weights.spec(i).kind == model::ParamKind::StemTable) lo.skip_tables = true;
  STEM_ASSIGN_OR_RETURN(model::TensorList w,
                        model::load_weights(cfg, (fs::path(ckpt_dir) / "model.safetensors").string(), lo));
  for (size_t i = 0; i < weights.size(); ++i)
    if (!weights[i].empty()) std::memcpy(weights[i].raw(), w[i].raw(), weights[i].nbytes());
  const std::string opath = (fs::path(ckpt_dir) / "optimizer.safetensors").string();
  STEM_ASSIGN_OR_RETURN(io::SafetensorsFile of, io::SafetensorsFile::open(opath));
  auto restore = [&](const std::string& name, Tensor& t) -> Status {
    const io::SafetensorsEntry* e = of.find(name);
    if (!e) return Status::error(opath + ": missing tensor '" + name + "'");
    if (e->shape != t.shape() || e->dtype != t.dtype())
      return Status::error(opath + ": tensor '" + name + "' is " + dtype_name(e->dtype) + " " + shape_str(e->shape) +
                           ", expected " + dtype_name(t.dtype()) + " " + shape_str(t.shape()));
    std::memcpy(t.raw(), of.data(*e), t.nbytes());
    return ok_status();
  };
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& s = weights.spec(i);
    if (!s.trainable) continue;
    if (!opt.last_step()[i].empty()) STEM_RETURN_IF_ERROR(restore("last." + s.name, opt.last_step()[i]));
    if (weights[i].empty() || opt.m()[i].empty()) continue;  // moments kept elsewhere (a rank's shard or slice)
    STEM_RETURN_IF_ERROR(restore("m." + s.name, opt.m()[i]));
    STEM_RETURN_IF_ERROR(restore("v." + s.name, opt.v()[i]));
    // Version 2: the lazy rows as the optimizer left them (version 1 saved
    // them flushed, so the model's values are the state).
    if (opt.lazy(i) && of.find("p." + s.name)) STEM_RETURN_IF_ERROR(restore("p." + s.name, weights[i]));
  }
  return ok_status();
}

}  // namespace stem::train
