// stem serve: an OpenAI-compatible HTTP server over stem::BatchGenerator
// (continuous batching, stem/batch.h), on cpp-httplib. Routes: /v1/completions,
// /v1/chat/completions (streaming as server-sent events), /v1/models,
// /health, /tokenize, /detokenize, /metrics. Edit overlays in --edits DIR are
// served as models "NAME+EDIT". The request JSON is serve_api.cpp's; this file
// wires HTTP to the generator: routing, the API key, errors in OpenAI's
// shape, streaming, and the lifecycle (listen first and answer /health with
// 503 while the model loads; on SIGINT/SIGTERM finish the running requests,
// cancel them after --grace-s, exit 0).
#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "commands.h"
#include "serve_api.h"
#include "stem/batch.h"
#include "stem/model.h"
#include "stem/signals.h"

namespace stem::cli {
namespace {

using serve::ApiError;
using serve::json;
namespace fs = std::filesystem;

struct Opts {
  std::string model_dir, host = "127.0.0.1", api_key, edits_dir, name;
  int port = 8080;
  int64_t parallel = 4, ctx = 0, step_tokens = 256, queue = 64, max_body_kb = 1024, threads = 64;
  double grace_s = 10;
  bool json = false;
  LoadFlags load;
};

// Everything the handlers share; the generator exists once `ready` is set.
struct Server {
  const Opts& o;
  httplib::Server http;
  std::atomic<bool> ready{false};
  Model model;
  std::optional<Tokenizer> tok;
  std::unique_ptr<BatchGenerator> gen;
  std::map<std::string, std::string> models;  // id -> edit name ("" for the model as loaded)
  std::atomic<int64_t> next_id{1}, http_errors{0};
  int64_t created = std::time(nullptr);

  explicit Server(const Opts& opts) : o(opts) {}
};

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(serve::text_of(body), "application/json");
}

void reply_error(Server& S, httplib::Response& res, const ApiError& e) {
  ++S.http_errors;
  if (e.status == 503) res.set_header("Retry-After", "1");
  reply(res, e.status, serve::error_body(e));
}

// The model id of a request: the model as loaded, or one of its edits.
bool resolve_model(Server& S, serve::ApiRequest* r, ApiError* err) {
  if (r->model.empty()) r->model = S.o.name;
  auto it = S.models.find(r->model);
  if (it == S.models.end()) {
    *err = ApiError{404, "the model '" + r->model + "' does not exist (GET /v1/models lists them)",
                    "invalid_request_error", "model_not_found", "model"};
    return false;
  }
  r->batch.edit = it->second;
  return true;
}

ApiError refusal_error(Refusal why, const Status& st) {
  switch (why) {
    case Refusal::TooLong:
      return ApiError{400, st.message(), "invalid_request_error", "context_length_exceeded", "prompt"};
    case Refusal::UnknownEdit:
      return ApiError{404, st.message(), "invalid_request_error", "model_not_found", "model"};
    case Refusal::Busy:
    case Refusal::ShuttingDown:
      return ApiError{503, st.message(), "server_error"};
    default:
      return ApiError{400, st.message()};
  }
}

std::string sse(const json& j) { return "data: " + serve::text_of(j) + "\n\n"; }

// A streamed response: chunks as tokens come, each choice's last chunk, the
// usage with the last of them, then [DONE]. A client that goes away cancels
// the request (its slots are free at the next pass).
void stream_response(Server& S, httplib::Response& res, serve::ApiRequest r, std::shared_ptr<BatchStream> stream,
                     std::string id) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [&S, r, stream, id](size_t, httplib::DataSink& sink) {
    auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
    std::vector<bool> started(r.batch.n, false);
    int64_t open = r.batch.n, prompt_tokens = 0, completion_tokens = 0;
    BatchEvent ev;
    while (open > 0) {
      if (!stream->next(&ev, std::chrono::milliseconds(200))) {
        if (stream->timed_out() && sink.is_writable()) continue;
        stream->cancel();
        return false;
      }
      bool ok = true;
      if (!ev.done) {
        if (!ev.text.empty() || r.logprobs >= 0 || !started[ev.index])
          ok = write(sse(serve::chunk(r, id, S.created, ev.index, ev.text, &ev, !started[ev.index])));
        started[ev.index] = true;
      } else {
        --open;
        prompt_tokens = ev.prompt_tokens;
        completion_tokens += ev.completion_tokens;
        if (!ev.error.ok()) {
          ok = write(sse(serve::error_body(ApiError{500, ev.error.message(), "server_error"})));
        } else {
          if (!ev.text.empty()) ok = write(sse(serve::chunk(r, id, S.created, ev.index, ev.text, nullptr, false)));
          const json use = open == 0 ? serve::usage(prompt_tokens, completion_tokens) : json(nullptr);
          ok = ok && write(sse(serve::final_chunk(r, id, S.created, ev.index, ev.stop, use)));
        }
      }
      if (!ok) {
        stream->cancel();
        return false;
      }
    }
    write("data: [DONE]\n\n");
    sink.done();
    return true;
  });
}

void handle_generate(Server& S, serve::Endpoint ep, const httplib::Request& req, httplib::Response& res) {
  ApiError err;
  json body;
  serve::ApiRequest r;
  if (!S.ready) return reply_error(S, res, ApiError{503, "the model is loading", "server_error"});
  if (!serve::parse_body(req.body, &body, &err) || !serve::parse_request(ep, body, &r, &err) || !resolve_model(S, &r, &err))
    return reply_error(S, res, err);
  if (ep == serve::Endpoint::Chat && !r.max_tokens_given) r.batch.gen.max_new_tokens = S.gen->context();
  Refusal why = Refusal::None;
  auto submitted = S.gen->submit(r.batch, &why);
  if (!submitted.ok()) return reply_error(S, res, refusal_error(why, submitted.status()));
  std::shared_ptr<BatchStream> stream = std::move(*submitted);
  char id[32];
  std::snprintf(id, sizeof id, "%s-%08lx", ep == serve::Endpoint::Chat ? "chatcmpl" : "cmpl",
                static_cast<unsigned long>(S.next_id++));
  if (r.stream) return stream_response(S, res, std::move(r), stream, id);
  std::vector<serve::Choice> choices(r.batch.n);
  int64_t prompt_tokens = 0;
  BatchEvent ev;
  while (stream->next(&ev)) {
    serve::Choice& c = choices[ev.index];
    c.text += ev.text;
    if (ev.done) {
      if (!ev.error.ok()) return reply_error(S, res, ApiError{500, ev.error.message(), "server_error"});
      c.stop = ev.stop;
      c.completion_tokens = ev.completion_tokens;
      prompt_tokens = ev.prompt_tokens;
    } else if (r.logprobs >= 0) {
      c.tokens.push_back(std::move(ev));
    }
  }
  reply(res, 200, serve::response(r, id, S.created, choices, prompt_tokens));
}

void handle_tokenize(Server& S, bool detokenize, const httplib::Request& req, httplib::Response& res) {
  ApiError err;
  json body;
  if (!S.ready) return reply_error(S, res, ApiError{503, "the model is loading", "server_error"});
  if (!serve::parse_body(req.body, &body, &err)) return reply_error(S, res, err);
  if (!detokenize) {
    if (!body.is_object() || !body.contains("content") || !body["content"].is_string())
      return reply_error(S, res, ApiError{400, "'content': expected a string", "invalid_request_error", "", "content"});
    const bool special = body.value("add_special", false);
    std::vector<int32_t> ids;
    if (special) ids.push_back(S.tok->bos_id());
    for (int32_t t : S.tok->encode(body["content"].get<std::string>())) ids.push_back(t);
    return reply(res, 200, {{"tokens", ids}});
  }
  if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
    return reply_error(S, res, ApiError{400, "'tokens': expected an array of token ids", "invalid_request_error", "", "tokens"});
  std::vector<int32_t> ids;
  for (const json& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= S.tok->vocab_size())
      return reply_error(S, res, ApiError{400, "'tokens': " + t.dump() + " is not a token id in [0, " +
                                                   std::to_string(S.tok->vocab_size()) + ")",
                                          "invalid_request_error", "", "tokens"});
    ids.push_back(t.get<int32_t>());
  }
  reply(res, 200, {{"content", S.tok->decode(ids)}});
}

std::string metrics(Server& S) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    char line[64];
    std::snprintf(line, sizeof line, "%.17g", v);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + line + "\n";
  };
  const BatchStats s = S.gen ? S.gen->stats() : BatchStats{};
  metric("stem_requests_total", "counter", "Generation requests accepted", s.requests);
  metric("stem_prompt_tokens_total", "counter", "Prompt tokens accepted (each of n completions counted)",
         s.prompt_tokens);
  metric("stem_completion_tokens_total", "counter", "Tokens generated", s.completion_tokens);
  metric("stem_http_errors_total", "counter", "Requests answered with an error status", S.http_errors);
  metric("stem_queue_depth", "gauge", "Completions waiting for a slot", s.queued);
  metric("stem_slots_busy", "gauge", "Slots holding a sequence", s.busy_slots);
  metric("stem_slots_total", "gauge", "Slots", s.slots);
  metric("stem_passes_total", "counter", "Batched forward passes", s.passes);
  metric("stem_table_rows_requested_total", "counter", "STEM table rows asked of the table store",
         s.rows_requested);
  metric("stem_table_bytes_read_total", "counter", "Bytes read from the table file (disk), or touched (mmap)",
         s.table_bytes_read);
  metric("stem_row_cache_hit_ratio", "gauge", "Share of rows served by the row cache (disk tier)",
         s.rows_requested ? static_cast<double>(s.cache_hits) / s.rows_requested : 0.0);
  return out;
}

void add_routes(Server& S) {
  httplib::Server& h = S.http;
  h.set_pre_routing_handler([&S](const httplib::Request& req, httplib::Response& res) {
    if (S.o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + S.o.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    reply_error(S, res, ApiError{401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error",
                                 "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  h.Get("/health", [&S](const httplib::Request&, httplib::Response& res) {
    if (S.ready) return reply(res, 200, {{"status", "ok"}});
    reply(res, 503, {{"status", "loading"}});
  });
  auto list_models = [&S](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const auto& [id, edit] : S.models)
      data.push_back({{"id", id}, {"object", "model"}, {"created", S.created}, {"owned_by", "stem"}});
    reply(res, 200, {{"object", "list"}, {"data", data}});
  };
  h.Get("/v1/models", list_models);
  h.Get("/models", list_models);
  for (const char* prefix : {"/v1", ""}) {
    h.Post(std::string(prefix) + "/completions", [&S](const httplib::Request& q, httplib::Response& r) {
      handle_generate(S, serve::Endpoint::Completions, q, r);
    });
    h.Post(std::string(prefix) + "/chat/completions", [&S](const httplib::Request& q, httplib::Response& r) {
      handle_generate(S, serve::Endpoint::Chat, q, r);
    });
  }
  h.Post("/tokenize", [&S](const httplib::Request& q, httplib::Response& r) { handle_tokenize(S, false, q, r); });
  h.Post("/detokenize", [&S](const httplib::Request& q, httplib::Response& r) { handle_tokenize(S, true, q, r); });
  h.Get("/metrics", [&S](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(S), "text/plain; version=0.0.4");
  });
  // Statuses httplib sets itself (no route, a body over the limit, a bad
  // request line) get OpenAI's error shape too.
  h.set_error_handler([&S](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ++S.http_errors;
    const std::string what = res.status == 404   ? "no route " + req.method + " " + req.path
                             : res.status == 413 ? "the body is larger than " + std::to_string(S.o.max_body_kb) + " KiB"
                                                 : "bad request (HTTP " + std::to_string(res.status) + ")";
    res.set_content(serve::text_of(serve::error_body(
                        ApiError{res.status, what, res.status == 404 ? "not_found_error" : "invalid_request_error"})),
                    "application/json");
  });
  h.set_exception_handler([&S](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    reply_error(S, res, ApiError{500, what, "server_error"});
  });
}

// The model, its tokenizer, the edits and the generator.
Status load(Server& S) {
  const Opts& o = S.o;
  LoadOptions lo = o.load.options();
  STEM_ASSIGN_OR_RETURN(S.model, Model::load(o.model_dir, lo));
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::for_model(S.model.dir(), S.model.config().vocab_size, "to serve text"));
  S.tok.emplace(std::move(tok));
  BatchOptions bo;
  bo.slots = o.parallel;
  bo.max_context = o.ctx;
  bo.step_tokens = o.step_tokens;
  bo.max_queue = o.queue;
  bo.prefetch = !o.load.no_prefetch;
  S.models[o.name] = "";
  if (!o.edits_dir.empty()) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(o.edits_dir, ec))
      if (e.path().extension() == ".ovl") files.push_back(e.path());
    if (ec) return Status::error("--edits " + o.edits_dir + ": " + ec.message());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
      bo.edits.emplace_back(f.stem().string(), f.string());
      S.models[o.name + "+" + f.stem().string()] = f.stem().string();
    }
  }
  STEM_ASSIGN_OR_RETURN(S.gen, BatchGenerator::start(S.model, *S.tok, bo));
  return ok_status();
}

int run(const Opts& o) {
  const char* cmd = "serve";
  Server S(o);
  add_routes(S);
  S.http.set_payload_max_length(static_cast<size_t>(o.max_body_kb) * 1024);
  S.http.set_read_timeout(30);
  S.http.set_write_timeout(30);
  const int threads = static_cast<int>(o.threads);
  S.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a
  // second server share a port in use instead of failing.
  S.http.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  const int port = o.port == 0 ? S.http.bind_to_any_port(o.host) : (S.http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0)
    return fail(cmd, Status::error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                                       " (in use, or not an address of this machine)"));
  const std::string url = "http://" + o.host + ":" + std::to_string(port);
  StopRequest stop;  // armed before any request can arrive
  std::thread listener([&S] { S.http.listen_after_bind(); });
  // stop() only ends a listener that runs: wait for it to start.
  while (!S.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto end_listener = [&] {
    S.http.stop();
    listener.join();
  };
  if (o.json) {
    std::printf("%s\n", json({{"event", "listening"}, {"url", url}}).dump().c_str());
  } else {
    std::printf("listening on %s\n", url.c_str());
  }
  std::fflush(stdout);
  if (Status st = load(S); !st.ok()) {
    end_listener();
    return fail(cmd, st);
  }
  S.ready = true;
  std::fprintf(stderr, "stem serve: %s ready: %ld slots of %ld positions, %.1f MiB of caches; models:",
               o.name.c_str(), static_cast<long>(S.gen->slots()), static_cast<long>(S.gen->context()),
               static_cast<double>(S.gen->memory_bytes()) / (1 << 20));
  for (const auto& [id, edit] : S.models) std::fprintf(stderr, " %s", id.c_str());
  std::fprintf(stderr, "\n");
  while (!stop.requested() && S.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (stop.requested())
    std::fprintf(stderr, "stem serve: %s: finishing the running requests (at most %.0f s)\n",
                 signal_name(stop.signal()).c_str(), o.grace_s);
  // Stop taking requests, let the running ones finish, cancel what is left
  // after the grace period, then close the listener.
  auto drained = std::async(std::launch::async, [&S] { S.gen->shutdown(false); });
  if (drained.wait_for(std::chrono::duration<double>(o.grace_s)) != std::future_status::ready) S.gen->shutdown(true);
  drained.wait();
  end_listener();
  const BatchStats s = S.gen->stats();
  if (o.json)
    std::printf("%s\n", json({{"event", "stopped"}, {"requests", s.requests}, {"completion_tokens", s.completion_tokens}})
                            .dump()
                            .c_str());
  std::fprintf(stderr, "stem serve: stopped after %ld requests, %ld tokens generated\n", static_cast<long>(s.requests),
               static_cast<long>(s.completion_tokens));
  return 0;
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  o->load.dtype = "auto";
  CLI::App* sub = app.add_subcommand("serve", "Serve a model over the OpenAI HTTP API, with continuous batching");
  sub->add_option("--model", o->model_dir, "Model directory (config.json, model.safetensors, tokenizer.model)")
      ->required();
  sub->add_option("--name", o->name, "Model id clients ask for (default: the model directory's name)");
  sub->add_option("--host", o->host, "Address to listen on (loopback unless you mean otherwise)")->capture_default_str();
  sub->add_option("--port", o->port, "Port (0: any free port; the URL is printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--parallel", o->parallel, "Slots: sequences decoded together, a KV cache each")
      ->check(CLI::Range(int64_t{1}, int64_t{256}))
      ->capture_default_str();
  sub->add_option("--ctx", o->ctx, "Positions per slot (0: max_position_embeddings)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--step-tokens", o->step_tokens, "Tokens one batched pass takes at most (prompt chunks included)")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}))
      ->capture_default_str();
  sub->add_option("--queue", o->queue, "Requests that may wait for a slot; more get 503")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  sub->add_option("--edits", o->edits_dir, "Directory of edit overlays (*.ovl), served as models NAME+FILE-STEM");
  sub->add_option("--max-body-kb", o->max_body_kb, "Largest request body, KiB (larger: 413)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  sub->add_option("--http-threads", o->threads, "Connections handled at once")
      ->check(CLI::Range(int64_t{2}, int64_t{4096}))
      ->capture_default_str();
  sub->add_option("--grace-s", o->grace_s, "On SIGINT/SIGTERM, seconds to let running requests finish")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print the listening URL and the final counts as JSON lines");
  add_load_flags(sub, &o->load);
  add_command(sub, [o] {
    if (o->name.empty()) {
      fs::path p = fs::path(o->model_dir).lexically_normal();
      if (p.filename().empty()) p = p.parent_path();
      o->name = p.filename().string();
    }
    if (o->name.empty() || o->name.find('+') != std::string::npos)
      return fail("serve", Status::error("--name '" + o->name + "': must be non-empty and without '+'"));
    return run(*o);
  });
}

}  // namespace stem::cli
