// convert_to_stem and convert_to_dense (include/stem/model.h): a checkpoint's
// FFN layers changed between dense and STEM, written into a new directory.
//   to STEM: up_proj of the chosen dense layers is dropped and the layer's
//     table U [V, f] is initialised from it: `embed` U[t] = W_up E[t] (the raw
//     embedding), `mean` U[t] = W_up mean_t(x) with x the layer's real FFN
//     input (the RMS-normalised residual stream) averaged over the positions
//     of token t in a data sample (`embed` for tokens never seen), `zero`.
//     W_up is linear, so the mean of W_up x is W_up applied to the mean of
//     x: the sample pass keeps [V, d] sums per layer, never [V, f].
//   to dense: a table is not a linear map of x. The up-projection is fitted
//     by ridge least squares, min sum_n |W x_n - U[t_n]|^2 over the sample's
//     FFN inputs (the normal equations need only X^T X [d, d] and the same
//     per-token sums of x), solved by a Cholesky factorisation in double.
// Gate and down projections, attention and norms are copied unchanged.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "io/token_shards.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "stem/model.h"

namespace stem {
namespace fs = std::filesystem;

Result<TableInit> parse_table_init(const std::string& s) {
  if (s == "embed") return TableInit::Embed;
  if (s == "mean") return TableInit::Mean;
  if (s == "zero") return TableInit::Zero;
  return Status::error("--init: '" + s + "' is not one of embed, mean, zero");
}

namespace {

// Layers named by `spec` among n: "1,3,5", "every2" (odd), "every3" (2, 5, ...),
// "all-but-first" (1..n-1), "full" (all).
Result<std::vector<int>> parse_layers(const std::string& spec, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    if ((spec == "every2" && i % 2 == 1) || (spec == "every3" && i % 3 == 2) || (spec == "all-but-first" && i >= 1) ||
        spec == "full")
      out.push_back(i);
  }
  if (spec == "every2" || spec == "every3" || spec == "all-but-first" || spec == "full") return out;
  size_t at = 0;
  while (at <= spec.size()) {
    const size_t comma = std::min(spec.find(',', at), spec.size());
    const std::string item = spec.substr(at, comma - at);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0 || v >= n)
      return Status::error("--layers: '" + item + "' of '" + spec + "' is not a layer index in [0, " +
                           std::to_string(n) + ") (or use every2, every3, all-but-first, full)");
    if (std::find(out.begin(), out.end(), static_cast<int>(v)) == out.end()) out.push_back(static_cast<int>(v));
    at = comma + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Per-token sums of each chosen layer's FFN input over a data sample, and X^T X.
struct InputStats {
  std::vector<int64_t> count;             // [V] positions of each token
  std::vector<std::vector<double>> sum;   // per layer [V, d]
  std::vector<std::vector<double>> xtx;   // per layer [d, d] (when asked)
  int64_t tokens = 0;
};

Result<InputStats> gather_inputs(model::Transformer& tr, const std::vector<int>& layers, bool want_xtx,
                                 const ArchConvertOptions& o) {
  const ModelConfig& cfg = tr.config();
  const int64_t V = cfg.vocab_size, d = cfg.hidden_size;
  STEM_ASSIGN_OR_RETURN(io::DataDir data, io::DataDir::open(o.data_dir));
  if (data.vocab_size != V)
    return Status::error(o.data_dir + ": vocabulary of " + std::to_string(data.vocab_size) + " tokens, the model's is " +
                         std::to_string(V));
  const int64_t T = std::min<int64_t>(o.seq, cfg.max_position_embeddings);
  if (T < 2 || data.train.size() < T)
    return Status::error(o.data_dir + ": the training split has " + std::to_string(data.train.size()) +
                         " tokens, fewer than one window of " + std::to_string(T));
  // At most enough windows to cover the split once.
  const int64_t windows = std::max<int64_t>(1, std::min(o.sample_tokens, data.train.size()) / T), B = 8;
  InputStats st;
  st.count.assign(V, 0);
  std::vector<int> slot(cfg.num_hidden_layers, -1);
  for (size_t i = 0; i < layers.size(); ++i) {
    slot[layers[i]] = static_cast<int>(i);
    st.sum.emplace_back(static_cast<size_t>(V * d), 0.0);
    if (want_xtx) st.xtx.emplace_back(static_cast<size_t>(d * d), 0.0);
  }
  std::vector<int32_t> tokens;
  std::vector<float> xtx_f(static_cast<size_t>(d * d));
  tr.set_observer([&](int l, const float* x, int64_t N, int64_t dd) {
    if (slot[l] < 0) return;
    double* s = st.sum[slot[l]].data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < dd; ++c) s[tokens[n] * dd + c] += x[n * dd + c];
    if (!want_xtx) return;
    tr.backend().ops().gemm(true, false, dd, dd, N, 1.0f, x, dd, x, dd, 0.0f, xtx_f.data(), dd);
    double* m = st.xtx[slot[l]].data();
    for (int64_t i = 0; i < dd * dd; ++i) m[i] += xtx_f[i];
  });
  const int64_t span = data.train.size() - T;
  for (int64_t w0 = 0; w0 < windows; w0 += B) {
    const int64_t nb = std::min(B, windows - w0);
    tokens.resize(static_cast<size_t>(nb * T));
    for (int64_t w = 0; w < nb; ++w) {
      const int64_t at = windows > 1 ? (w0 + w) * span / (windows - 1) : 0;  // spread over the split
      data.train.read(at, T, tokens.data() + w * T);
    }
    for (int32_t t : tokens) ++st.count[t];
    Status rows = tr.prepare_rows(tokens.data(), nb * T);
    if (!rows.ok()) {
      tr.set_observer(nullptr);
      return rows;
    }
    tr.forward(tokens.data(), nb, T);
    st.tokens += nb * T;
    if (o.progress) o.progress(std::min(windows, w0 + nb), windows);
  }
  tr.set_observer(nullptr);
  return st;
}

// Solves (M + lambda I) X = R for X [d, f], M [d, d] symmetric positive
// semi-definite, by Cholesky in double; lambda = ridge * trace(M) / d.
Result<std::vector<double>> ridge_solve(std::vector<double> M, std::vector<double> R, int64_t d, int64_t f, double ridge) {
  double tr = 0;
  for (int64_t i = 0; i < d; ++i) tr += M[i * d + i];
  const double lambda = std::max(ridge * tr / static_cast<double>(d), 1e-12);
  for (int64_t i = 0; i < d; ++i) M[i * d + i] += lambda;
  for (int64_t j = 0; j < d; ++j) {  // M = L L^T, L in the lower triangle
    double diag = M[j * d + j];
    for (int64_t k = 0; k < j; ++k) diag -= M[j * d + k] * M[j * d + k];
    if (!(diag > 0)) return Status::error("--to-dense: the FFN inputs' Gram matrix is not positive definite");
    M[j * d + j] = std::sqrt(diag);
    for (int64_t i = j + 1; i < d; ++i) {
      double v = M[i * d + j];
      for (int64_t k = 0; k < j; ++k) v -= M[i * d + k] * M[j * d + k];
      M[i * d + j] = v / M[j * d + j];
    }
  }
  for (int64_t c = 0; c < f; ++c) {  // forward then backward substitution, column c of R
    for (int64_t i = 0; i < d; ++i) {
      double v = R[i * f + c];
      for (int64_t k = 0; k < i; ++k) v -= M[i * d + k] * R[k * f + c];
      R[i * f + c] = v / M[i * d + i];
    }
    for (int64_t i = d - 1; i >= 0; --i) {
      double v = R[i * f + c];
      for (int64_t k = i + 1; k < d; ++k) v -= M[k * d + i] * R[k * f + c];
      R[i * f + c] = v / M[i * d + i];
    }
  }
  return R;
}

// The source checkpoint in RAM (F32), the output checked not to be it.
Result<Model> open_source(const std::string& dir, const std::string& out) {
  STEM_ASSIGN_OR_RETURN(std::string src, resolve_model_dir(dir));
  std::error_code ec;
  if (out.empty()) return Status::error("convert: give --out DIR, the new model's directory");
  if (fs::exists(out, ec) && fs::equivalent(out, src, ec))
    return Status::error("--out " + out + " is the source checkpoint; it is never changed in place");
  return Model::load(src);
}

// The new config's tensors: copied by name from the source where they exist.
model::TensorList copy_common(const model::TensorList& from, const ModelConfig& cfg) {
  model::TensorList w = model::TensorList::allocate(model::tensor_specs(cfg));
  for (size_t i = 0; i < w.size(); ++i) {
    const int j = from.find(w.spec(i).name);
    if (j >= 0 && from[j].shape() == w[i].shape()) std::memcpy(w[i].raw(), from[j].raw(), w[i].nbytes());
  }
  return w;
}

// The layers `spec` names (default: all-but-first to STEM, every STEM layer
// to dense), each of which must be of type `from`.
Result<std::vector<int>> chosen_layers(const Model& src, const std::string& spec, FfnType from) {
  const ModelConfig& cfg = src.config();
  const bool to_stem = from == FfnType::Dense;
  std::vector<int> layers;
  if (spec.empty() && !to_stem) {
    for (int l = 0; l < cfg.num_hidden_layers; ++l)
      if (cfg.ffn_types[l] == FfnType::Stem) layers.push_back(l);
    if (layers.empty()) return Status::error(src.dir() + "/config.json: no STEM layer to make dense");
  } else {
    STEM_ASSIGN_OR_RETURN(layers, parse_layers(spec.empty() ? "all-but-first" : spec, static_cast<int>(cfg.num_hidden_layers)));
    if (layers.empty()) return Status::error("--layers " + spec + ": no layer chosen");
  }
  for (int l : layers)
    if (cfg.ffn_types[l] != from)
      return Status::error(src.dir() + "/config.json: layer " + std::to_string(l) + " is " + ffn_type_name(cfg.ffn_types[l]) +
                           ", not " + ffn_type_name(from) + "; only " + (to_stem ? "dense layers become STEM" : "STEM layers become dense"));
  return layers;
}

void report_sample(const InputStats& st, ArchConvertReport* rep) {
  rep->sample_tokens = st.tokens;
  for (int64_t c : st.count) rep->tokens_seen += c > 0;
}

}  // namespace

Result<ArchConvertReport> convert_to_stem(const std::string& dir, const std::string& out, const ArchConvertOptions& o) {
  STEM_ASSIGN_OR_RETURN(Model src, open_source(dir, out));
  model::Transformer& tr = engine(src);
  const ModelConfig& cfg = src.config();
  STEM_ASSIGN_OR_RETURN(std::vector<int> layers, chosen_layers(src, o.layers, FfnType::Dense));
  if (o.init == TableInit::Mean && o.data_dir.empty())
    return Status::error("--init mean: give --data DIR (a prepared data directory) for the FFN inputs");
  ArchConvertReport rep;
  rep.layers = layers;
  InputStats st;
  if (o.init == TableInit::Mean) {
    STEM_ASSIGN_OR_RETURN(st, gather_inputs(tr, layers, false, o));
    report_sample(st, &rep);
  }
  ModelConfig nc = cfg;
  for (int l : layers) nc.ffn_types[l] = FfnType::Stem;
  model::TensorList w = copy_common(tr.weights(), nc);
  const int64_t V = cfg.vocab_size, d = cfg.hidden_size, f = cfg.intermediate_size;
  const int64_t i_embed = tr.weights().find("model.embed_tokens.weight");
  std::vector<float> mean_x(static_cast<size_t>(V * d));
  for (size_t k = 0; k < layers.size(); ++k) {
    const std::string p = "model.layers." + std::to_string(layers[k]) + ".mlp.";
    const float* up = tr.weights()[tr.weights().find(p + "up_proj.weight")].f32();  // [f, d]
    float* U = w[w.find(p + "stem_embedding.weight")].f32();                         // [V, f]
    if (o.init == TableInit::Zero) continue;  // allocate() zeroed it
    const float* x = tr.weights()[i_embed].f32();  // embed: U = E W_up^T
    if (o.init == TableInit::Mean) {
      for (int64_t t = 0; t < V; ++t)
        for (int64_t c = 0; c < d; ++c)
          mean_x[t * d + c] = st.count[t] > 0 ? static_cast<float>(st.sum[k][t * d + c] / static_cast<double>(st.count[t]))
                                              : x[t * d + c];
      x = mean_x.data();
    }
    tr.backend().ops().linear_forward(U, x, up, V, d, f, false);
  }
  STEM_RETURN_IF_ERROR(write_model_dir(out, nc, w, src.tokenizer_path()));
  for (size_t i = 0; i < w.size(); ++i) rep.weight_bytes += static_cast<int64_t>(w[i].nbytes());
  return rep;
}

Result<ArchConvertReport> convert_to_dense(const std::string& dir, const std::string& out, const ArchConvertOptions& o) {
  STEM_ASSIGN_OR_RETURN(Model src, open_source(dir, out));
  model::Transformer& tr = engine(src);
  const ModelConfig& cfg = src.config();
  STEM_ASSIGN_OR_RETURN(std::vector<int> layers, chosen_layers(src, o.layers, FfnType::Stem));
  if (o.data_dir.empty())
    return Status::error("--to-dense: give --data DIR; the up-projection is fitted to the FFN inputs of its sample");
  ArchConvertReport rep;
  rep.layers = layers;
  STEM_ASSIGN_OR_RETURN(InputStats st, gather_inputs(tr, layers, true, o));
  report_sample(st, &rep);
  ModelConfig nc = cfg;
  for (int l : layers) nc.ffn_types[l] = FfnType::Dense;
  model::TensorList w = copy_common(tr.weights(), nc);
  const int64_t V = cfg.vocab_size, d = cfg.hidden_size, f = cfg.intermediate_size;
  double err = 0, norm = 0;
  for (size_t k = 0; k < layers.size(); ++k) {
    const std::string p = "model.layers." + std::to_string(layers[k]) + ".mlp.";
    const float* U = tr.weights()[tr.weights().find(p + "stem_embedding.weight")].f32();  // [V, f]
    // R = S^T U [d, f], S[t] the sum of x over token t; Y^T Y = sum_t count[t] |U[t]|^2.
    std::vector<double> R(static_cast<size_t>(d * f), 0.0);
    double yy = 0;
    for (int64_t t = 0; t < V; ++t) {
      if (st.count[t] == 0) continue;
      const double* s = st.sum[k].data() + t * d;
      for (int64_t c = 0; c < f; ++c) yy += static_cast<double>(st.count[t]) * U[t * f + c] * U[t * f + c];
      for (int64_t i = 0; i < d; ++i)
        for (int64_t c = 0; c < f; ++c) R[i * f + c] += s[i] * U[t * f + c];
    }
    STEM_ASSIGN_OR_RETURN(std::vector<double> Wt, ridge_solve(st.xtx[k], R, d, f, o.ridge));  // W^T [d, f]
    // |X W^T - Y|^2 = tr(W M W^T) - 2 tr(W R) + Y^T Y.
    double wmw = 0, wr = 0;
    const std::vector<double>& M = st.xtx[k];
    for (int64_t c = 0; c < f; ++c)
      for (int64_t i = 0; i < d; ++i) {
        wr += Wt[i * f + c] * R[i * f + c];
        double mw = 0;
        for (int64_t j = 0; j < d; ++j) mw += M[i * d + j] * Wt[j * f + c];
        wmw += Wt[i * f + c] * mw;
      }
    err += std::max(0.0, wmw - 2 * wr + yy);
    norm += yy;
    float* up = w[w.find(p + "up_proj.weight")].f32();  // [f, d]
    for (int64_t c = 0; c < f; ++c)
      for (int64_t i = 0; i < d; ++i) up[c * d + i] = static_cast<float>(Wt[i * f + c]);
  }
  rep.fit_rel_error = norm > 0 ? std::sqrt(err / norm) : 0.0;
  STEM_RETURN_IF_ERROR(write_model_dir(out, nc, w, src.tokenizer_path()));
  for (size_t i = 0; i < w.size(); ++i) rep.weight_bytes += static_cast<int64_t>(w[i].nbytes());
  return rep;
}

}  // namespace stem
