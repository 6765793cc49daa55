// The HTTP side of `stem serve` (cmd_serve.cpp): the options, the state the
// handlers share, and the routes: the OpenAI API (serve_api.h turns JSON into
// requests and events into responses), /v1/models, /health, /tokenize,
// /detokenize and /metrics, the API key and errors in OpenAI's shape. No
// model loading, no lifecycle (cmd_serve.cpp).
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "stem/batch.h"
#include "stem/model.h"
#include "stem/tokenizer.h"

namespace stem::cli {

struct ServeOpts {
  std::string model_dir, host = "127.0.0.1", api_key, edits_dir, name;
  int port = 8080;
  int64_t parallel = 4, ctx = 0, step_tokens = 256, queue = 64, max_body_kb = 1024, threads = 64;
  double grace_s = 10;
  bool json = false;
  LoadFlags load;
};

// Everything the handlers share; the generator exists once `ready` is set.
struct Server {
  const ServeOpts& o;
  httplib::Server http;
  std::atomic<bool> ready{false};
  Model model;
  std::optional<Tokenizer> tok;
  std::unique_ptr<BatchGenerator> gen;
  std::map<std::string, std::string> models;  // id -> edit name ("" for the model as loaded)
  std::atomic<int64_t> next_id{1}, http_errors{0};
  int64_t created = std::time(nullptr);

  explicit Server(const ServeOpts& opts) : o(opts) {}
};

// Routes every endpoint of S.http to its handler.
void add_routes(Server& S);

}  // namespace stem::cli
