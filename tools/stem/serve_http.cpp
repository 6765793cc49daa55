// The routes of `stem serve` (see serve_http.h): each handler checks the
// request (serve_api.h), hands it to the BatchGenerator and streams or
// returns its events; refusals and bad requests become OpenAI errors with a
// 4xx status, a failure inside a 500.
#include "serve_http.h"

#include <sys/socket.h>

#include <cstdio>
#include <future>
#include <mutex>
#include <thread>

#include "serve_api.h"

namespace stem::cli {
namespace {

using serve::ApiError;
using serve::json;

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
  if (!submitted.ok()) return reply_error(S, res, serve::refusal_error(why, submitted.status()));
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

}  // namespace

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

}  // namespace stem::cli
