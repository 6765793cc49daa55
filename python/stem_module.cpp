// The `stem` Python module: a thin front end over the public C++ API
// (include/stem/), like the CLI. Models (load, config, score, generate with
// streaming), tokenizers, STEM table rows as NumPy arrays (a view without a
// copy when the tables are in RAM as F32), edit overlays, and short training
// runs with a per-step callback.
//
// Errors raise RuntimeError with stem's one-line message. Long calls release
// the GIL and defer SIGINT/SIGTERM/SIGHUP while they compute (stem/signals.h:
// no Python signal handler may run on a thread inside oneDNN); Ctrl-C is
// delivered when the call returns, and stops a training run cleanly after
// the step in progress (a checkpoint is saved first).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <optional>

#include "stem/edit.h"
#include "stem/eval.h"
#include "stem/generate.h"
#include "stem/model.h"
#include "stem/signals.h"
#include "stem/tokenizer.h"
#include "stem/train.h"

namespace py = pybind11;

namespace {

template <typename T>
T unwrap(stem::Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}
void check(const stem::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.message());
}

// Compute without the GIL and with the signals deferred (see above).
struct NativeCall {
  stem::SignalsDeferred signals;
  py::gil_scoped_release nogil;
};

// Runs `f` (which returns a stem::Result) as a NativeCall and unwraps its value.
template <typename F>
auto native(F&& f) {
  auto r = [&] {
    NativeCall nc;
    return f();
  }();
  return unwrap(std::move(r));
}

// config.json's keys and values, as Python objects.
py::object config_dict(const stem::ModelConfig& c) { return py::module_::import("json").attr("loads")(c.to_json()); }

stem::GenerateOptions generate_options(int64_t max_new_tokens, bool greedy, float temperature, int64_t top_k,
                                       float top_p, uint64_t seed, std::vector<std::string> stop) {
  stem::GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.sampler = {.temperature = temperature, .top_k = top_k, .top_p = top_p, .greedy = greedy, .seed = seed};
  o.stop = std::move(stop);
  return o;
}

// Runs generate() natively; `on_token` (may be None) is called with (id, text)
// holding the GIL, and may return False to stop.
py::dict run_generate(stem::Model& m, const std::function<stem::Result<stem::GenerateResult>(
                                          const stem::TokenCallback&)>& fn, const py::object& on_token) {
  stem::TokenCallback cb;
  std::string error;  // a Python exception in the callback stops generation, then is raised
  if (!on_token.is_none())
    cb = [&on_token, &error](const stem::GeneratedToken& t) {
      py::gil_scoped_acquire gil;
      try {
        py::object r = on_token(t.id, py::bytes(t.text).attr("decode")("utf-8", "replace"));
        return r.is_none() || r.cast<bool>();
      } catch (const std::exception& e) {
        error = e.what();
        return false;
      }
    };
  stem::Result<stem::GenerateResult> r = stem::Status::error("generate: not run");
  {
    NativeCall nc;
    r = fn(cb);
  }
  if (!error.empty()) throw std::runtime_error("on_token: " + error);
  const stem::GenerateResult& g = unwrap(std::move(r));
  py::dict d;
  d["ids"] = g.ids;
  d["prompt_ids"] = g.prompt_ids;
  d["text"] = g.text;
  d["stop"] = stem::stop_reason_name(g.stop);
  d["prefill_seconds"] = g.prefill_seconds;
  d["decode_seconds"] = g.decode_seconds;
  return d;
}

}  // namespace

PYBIND11_MODULE(stem, mod) {
  mod.doc() = "stem: train, run, evaluate and edit STEM language models";

  py::class_<stem::Tokenizer>(mod, "Tokenizer")
      .def_static("load", [](const std::string& path) { return unwrap(stem::Tokenizer::load(path)); })
      .def("encode", [](const stem::Tokenizer& t, const std::string& s) { return t.encode(s); })
      .def("decode", [](const stem::Tokenizer& t, const std::vector<int32_t>& ids) {
        return py::bytes(t.decode(ids)).attr("decode")("utf-8", "replace");
      })
      .def("piece", &stem::Tokenizer::piece)
      .def_property_readonly("vocab_size", &stem::Tokenizer::vocab_size)
      .def_property_readonly("bos_id", &stem::Tokenizer::bos_id)
      .def_property_readonly("eos_id", &stem::Tokenizer::eos_id);

  py::class_<stem::AppliedEdits>(mod, "AppliedEdits")
      .def("revert", [](stem::AppliedEdits& a) { check(a.revert()); })
      .def_property_readonly("rows", &stem::AppliedEdits::rows);

  py::class_<stem::Model>(mod, "Model")
      .def_static(
          "load",
          [](const std::string& dir, const std::string& tables, const std::string& dtype, int64_t table_cache_mb) {
            stem::LoadOptions o;
            o.tables = unwrap(stem::parse_tables_in(tables));
            o.dtype = unwrap(stem::parse_weight_dtype(dtype));
            o.table_cache_mb = table_cache_mb;
            NativeCall nc;
            return unwrap(stem::Model::load(dir, o));
          },
          py::arg("dir"), py::arg("tables") = "ram", py::arg("dtype") = "f32", py::arg("table_cache_mb") = 256,
          "Loads a checkpoint directory (or a training run directory: its latest checkpoint)")
      .def_property_readonly("config", [](const stem::Model& m) { return config_dict(m.config()); })
      .def_property_readonly("dir", &stem::Model::dir)
      .def("tokenizer",
           [](const stem::Model& m) {
             return unwrap(stem::Tokenizer::for_model(m.dir(), m.config().vocab_size, "by Model.tokenizer()"));
           })
      .def(
          "score",
          [](stem::Model& m, py::array_t<int32_t, py::array::c_style | py::array::forcecast> ids, bool logits) {
            if (ids.ndim() != 1 && ids.ndim() != 2) throw std::runtime_error("score: ids must be [T] or [B, T]");
            const int64_t B = ids.ndim() == 2 ? ids.shape(0) : 1, T = ids.shape(ids.ndim() - 1);
            std::vector<int32_t> v(ids.data(), ids.data() + B * T);
            std::vector<float> out;
            const double l = native([&] { return m.score(v, B, T, logits ? &out : nullptr); });
            if (!logits) return py::object(py::float_(l));
            py::array_t<float> a({B * T, m.config().vocab_size});
            std::copy(out.begin(), out.end(), a.mutable_data());
            return py::object(py::make_tuple(l, a));
          },
          py::arg("ids"), py::arg("logits") = false,
          "Mean next-token loss of ids [T] or [B, T]; with logits=True also the [B*T, V] logits")
      .def(
          "score_continuation",
          [](stem::Model& m, const stem::Tokenizer& tok, const std::string& ctx, const std::string& cont) {
            const stem::ContinuationScore s = native([&] { return stem::score_continuation(m, tok, ctx, cont); });
            py::dict d;
            d["logprob"] = s.logprob;
            d["tokens"] = s.tokens;
            d["greedy"] = s.greedy;
            d["first_prob"] = s.first_prob;
            d["first_rank"] = s.first_rank;
            return d;
          },
          "Log-likelihood of a continuation after a context (lm-evaluation-harness rules)")
      .def(
          "perplexity",
          [](stem::Model& m, const std::string& data, int64_t seq, int64_t batch, int64_t max_tokens, bool decode) {
            stem::PerplexityOptions o;
            o.seq = seq;
            o.batch = batch;
            o.max_tokens = max_tokens;
            o.decode = decode;
            const stem::PerplexityResult p = native([&] { return stem::evaluate_perplexity(m, data, o); });
            py::dict d;
            d["data"] = p.data;
            d["loss"] = p.mean_loss;
            d["loss_se"] = p.se;
            d["perplexity"] = p.perplexity;
            d["perplexity_low"] = p.ppl_low;
            d["perplexity_high"] = p.ppl_high;
            d["windows"] = p.windows;
            d["predicted_tokens"] = p.predicted;
            d["path"] = p.path;
            d["window_loss"] = p.window_loss;  // per window, in order: paired comparisons of two models
            return d;
          },
          py::arg("data"), py::arg("seq") = 512, py::arg("batch") = 4, py::arg("max_tokens") = 0,
          py::arg("decode") = false,
          "Perplexity on a data directory's held-out split, a .tok shard or a file of token ids (as stem eval; "
          "decode=True feeds one token at a time through the decode step)")
      .def(
          "generate",
          [](stem::Model& m, const stem::Tokenizer& tok, const std::string& prompt, int64_t max_new_tokens,
             bool greedy, float temperature, int64_t top_k, float top_p, uint64_t seed,
             std::vector<std::string> stop, const py::object& on_token) {
            const stem::GenerateOptions o =
                generate_options(max_new_tokens, greedy, temperature, top_k, top_p, seed, std::move(stop));
            return run_generate(
                m, [&](const stem::TokenCallback& cb) { return stem::generate(m, tok, prompt, o, cb); }, on_token);
          },
          py::arg("tokenizer"), py::arg("prompt"), py::arg("max_new_tokens") = 64, py::arg("greedy") = false,
          py::arg("temperature") = 0.8f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("seed") = 0,
          py::arg("stop") = std::vector<std::string>{}, py::arg("on_token") = py::none(),
          "Continues a text prompt; on_token(id, text) streams each token (return False to stop)")
      .def(
          "generate_ids",
          [](stem::Model& m, const std::vector<int32_t>& ids, int64_t max_new_tokens, bool greedy, float temperature,
             int64_t top_k, float top_p, uint64_t seed, const py::object& on_token) {
            const stem::GenerateOptions o =
                generate_options(max_new_tokens, greedy, temperature, top_k, top_p, seed, {});
            return run_generate(
                m, [&](const stem::TokenCallback& cb) { return stem::generate(m, ids, o, cb); }, on_token);
          },
          py::arg("ids"), py::arg("max_new_tokens") = 64, py::arg("greedy") = false, py::arg("temperature") = 0.8f,
          py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("seed") = 0, py::arg("on_token") = py::none())
      .def(
          "table",
          [](py::object self, int32_t layer) {
            stem::Model& m = self.cast<stem::Model&>();
            float* p = stem::table_data(m, layer);
            if (!p)
              throw std::runtime_error("table: layer " + std::to_string(layer) +
                                       " is not a STEM layer held in RAM as F32 (use table_row)");
            const int64_t V = m.config().vocab_size, f = m.config().intermediate_size;
            // A view into the model's memory, keeping the model alive.
            return py::array_t<float>({V, f}, {f * 4, int64_t{4}}, p, self);
          },
          "STEM layer `layer`'s table [V, f] as a writable NumPy view (no copy)")
      .def("table_row",
           [](stem::Model& m, int32_t layer, int32_t token) {
             std::vector<float> r = unwrap(stem::read_table_row(m, layer, token));
             py::array_t<float> a(static_cast<py::ssize_t>(r.size()));
             std::copy(r.begin(), r.end(), a.mutable_data());
             return a;
           })
      .def("set_table_row",
           [](stem::Model& m, int32_t layer, int32_t token,
              py::array_t<float, py::array::c_style | py::array::forcecast> row) {
             check(stem::write_table_row(m, layer, token, std::vector<float>(row.data(), row.data() + row.size())));
           })
      .def(
          "evaluate_task",
          [](stem::Model& m, const stem::Tokenizer& tok, const std::string& path, int64_t limit, bool share_context) {
            stem::Task task = unwrap(stem::read_task(path));
            stem::TaskOptions o;
            o.limit = limit;
            o.share_context = share_context;
            o.keep_samples = true;
            const stem::TaskResult t = native([&] { return stem::evaluate_task(m, tok, task, o); });
            py::dict d;
            d["task"] = t.task;
            d["kind"] = t.kind == stem::TaskKind::Cloze ? "cloze" : "multiple_choice";
            d["examples"] = t.examples;
            d["acc"] = t.acc;
            d["acc_stderr"] = t.acc_se;
            d["acc_norm"] = t.acc_norm;
            d["acc_norm_stderr"] = t.acc_norm_se;
            d["perplexity"] = t.perplexity;
            py::list lls;
            for (const stem::TaskSample& s : t.samples) lls.append(s.logprobs);
            d["logprobs"] = lls;
            return d;
          },
          py::arg("tokenizer"), py::arg("path"), py::arg("limit") = 0, py::arg("share_context") = true,
          "A multiple-choice or cloze task file scored with lm-evaluation-harness's rules (docs/evaluation.md)")
      .def("apply_overlays", [](stem::Model& m, const std::vector<std::string>& files) {
        return unwrap(stem::apply_overlays(m, files));
      });

  mod.def(
      "train",
      [](const std::string& config, const std::string& data, const std::string& out, int64_t steps, int64_t batch,
         int64_t seq, float lr, uint64_t seed, bool resume, const py::object& on_step, const std::string& init_from,
         std::optional<float> lr_tables, int64_t freeze_backbone_steps, const std::string& teacher, float distill_alpha,
         float distill_temperature, float rope_theta, bool doc_mask, const std::string& precision, bool lazy_tables,
         const std::string& tables, bool prefetch, int zero_stage) {
        stem::TrainOptions o;
        o.precision = unwrap(stem::parse_precision(precision));
        o.lazy_tables = lazy_tables;
        if (tables != "ram" && tables != "disk")
          throw std::runtime_error("train: tables = '" + tables + "' (expected ram or disk)");
        o.tables_on_disk = tables == "disk";
        o.prefetch = prefetch;
        o.zero_stage = zero_stage;
        o.config_path = config;
        o.init_from = init_from;
        if (lr_tables) o.lr_tables = *lr_tables;
        o.freeze_backbone_steps = freeze_backbone_steps;
        o.teacher = teacher;
        o.distill_alpha = distill_alpha;
        o.distill_temperature = distill_temperature;
        o.rope_theta = rope_theta;
        o.doc_mask = doc_mask;
        o.data_dir = data;
        o.out_dir = out;
        o.steps = steps;
        o.batch = batch;
        o.seq = seq;
        o.lr = lr;
        o.seed = seed;
        o.resume = resume;
        o.force = !resume;
        o.eval_every = 0;
        o.save_every = steps;
        std::atomic<bool> stop{false};
        py::list losses;
        stem::Result<stem::TrainEnd> end = stem::Status::error("train: not run");
        std::string last, error;
        {
          NativeCall nc;
          auto t = stem::Trainer::create(o);
          if (!t.ok()) {
            end = t.status();
          } else {
            end = (*t)->run(
                [&](const stem::StepRecord& r) {
                  if (stem::SignalsDeferred::pending()) stop = true;  // Ctrl-C: save and return
                  py::gil_scoped_acquire gil;
                  losses.append(r.loss);
                  if (on_step.is_none() || !error.empty()) return;
                  try {
                    on_step(r.step, r.loss);
                  } catch (const std::exception& e) {  // stop cleanly, then raise it
                    error = e.what();
                    stop = true;
                  }
                },
                &stop);
            last = (*t)->last_checkpoint();
          }
        }
        if (!error.empty()) throw std::runtime_error("on_step: " + error);
        const stem::TrainEnd e = unwrap(std::move(end));
        py::dict d;
        d["losses"] = losses;
        d["checkpoint"] = last;
        d["finished"] = e == stem::TrainEnd::Finished;
        return d;
      },
      py::arg("config"), py::arg("data"), py::arg("out"), py::arg("steps") = 20, py::arg("batch") = 4,
      py::arg("seq") = 128, py::arg("lr") = 2e-3f, py::arg("seed") = 0, py::arg("resume") = false,
      py::arg("on_step") = py::none(), py::kw_only(), py::arg("init_from") = "", py::arg("lr_tables") = py::none(),
      py::arg("freeze_backbone_steps") = 0, py::arg("teacher") = "", py::arg("distill_alpha") = 0.5f,
      py::arg("distill_temperature") = 1.0f, py::arg("rope_theta") = 0.0f, py::arg("doc_mask") = false,
      py::arg("precision") = "f32", py::arg("lazy_tables") = false, py::arg("tables") = "ram",
      py::arg("prefetch") = true, py::arg("zero_stage") = 0,
      "Trains a model (config.json path, or \"\" with init_from) on a data directory from `stem prepare`; returns "
      "losses and the checkpoint. The keyword options are those of `stem train` (docs/convert.md)");

  // From dense to STEM and back (docs/convert.md).
  auto convert = [](bool to_stem) {
    return [to_stem](const std::string& model, const std::string& out, const std::string& layers,
                     const std::string& init, const std::string& data, int64_t sample_tokens, double ridge) {
      stem::ArchConvertOptions o;
      o.layers = layers;
      o.init = unwrap(stem::parse_table_init(init));
      o.data_dir = data;
      o.sample_tokens = sample_tokens;
      o.ridge = ridge;
      const stem::ArchConvertReport rep = native(
          [&] { return to_stem ? stem::convert_to_stem(model, out, o) : stem::convert_to_dense(model, out, o); });
      py::dict d;
      d["layers"] = rep.layers;
      d["sample_tokens"] = rep.sample_tokens;
      d["tokens_seen"] = rep.tokens_seen;
      d["fit_rel_error"] = rep.fit_rel_error;
      d["weight_bytes"] = rep.weight_bytes;
      return d;
    };
  };
  const stem::ArchConvertOptions defaults;
  mod.def("convert_to_stem", convert(true), py::arg("model"), py::arg("out"), py::kw_only(), py::arg("layers") = "",
          py::arg("init") = "embed", py::arg("data") = "", py::arg("sample_tokens") = defaults.sample_tokens,
          py::arg("ridge") = defaults.ridge,
          "A dense checkpoint written into OUT with the chosen layers made STEM (init embed, mean over DATA, or zero)");
  mod.def("convert_to_dense", convert(false), py::arg("model"), py::arg("out"), py::kw_only(), py::arg("layers") = "",
          py::arg("init") = "embed", py::arg("data") = "", py::arg("sample_tokens") = defaults.sample_tokens,
          py::arg("ridge") = defaults.ridge,
          "STEM layers made dense: up_proj fitted to each table by ridge least squares over DATA's FFN inputs");
}
