// stem serve: an OpenAI-compatible HTTP server over stem::BatchGenerator
// (continuous batching, stem/batch.h), on cpp-httplib. This file is the
// command: its flags, loading the model, its tokenizer and the edit overlays
// of --edits DIR (served as models "NAME+EDIT"), and the lifecycle (listen
// first and answer /health with 503 while the model loads; on SIGINT/SIGTERM
// finish the running requests, cancel them after --grace-s, exit 0). The
// routes are serve_http.cpp's, the OpenAI JSON serve_api.cpp's and
// serve_responses.cpp's.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_http.h"
#include "stem/signals.h"

namespace stem::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The model, its tokenizer, the edits and the generator.
Status load(Server& S) {
  const ServeOpts& o = S.o;
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

int run(const ServeOpts& o) {
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
  auto o = std::make_shared<ServeOpts>();
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
