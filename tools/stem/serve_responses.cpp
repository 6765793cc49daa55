// Responses of `stem serve` in the OpenAI API's shape (see serve_api.h):
// finish reasons, usage, the two logprobs formats, whole responses and
// stream chunks of both endpoints. Plain functions of JSON; requests are
// serve_api.cpp's.
#include "serve_api.h"

namespace stem::serve {

const char* finish_reason(StopReason r) {
  return r == StopReason::Eos || r == StopReason::StopString ? "stop" : "length";
}

json usage(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {
json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}
}  // namespace

json completion_logprobs(const std::vector<const BatchEvent*>& tokens, int64_t text_offset) {
  json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const BatchEvent* e : tokens) {
    out["tokens"].push_back(e->logprob.piece);
    out["token_logprobs"].push_back(e->logprob.logprob);
    json top = json::object();
    for (const TokenLogprob& t : e->top) top[t.piece] = t.logprob;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(text_offset);
    text_offset += static_cast<int64_t>(e->text.size());
  }
  return out;
}

json chat_logprobs(const std::vector<const BatchEvent*>& tokens) {
  json content = json::array();
  for (const BatchEvent* e : tokens) {
    json top = json::array();
    for (const TokenLogprob& t : e->top)
      top.push_back({{"token", t.piece}, {"logprob", t.logprob}, {"bytes", bytes_of(t.piece)}});
    content.push_back({{"token", e->logprob.piece},
                       {"logprob", e->logprob.logprob},
                       {"bytes", bytes_of(e->logprob.piece)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

namespace {
json head(const ApiRequest& r, const std::string& id, int64_t created, bool chunked) {
  const bool chat = r.endpoint == Endpoint::Chat;
  return {{"id", id},
          {"object", chat ? (chunked ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", created},
          {"model", r.model}};
}
}  // namespace

json response(const ApiRequest& r, const std::string& id, int64_t created, const std::vector<Choice>& choices,
              int64_t prompt_tokens) {
  json out = head(r, id, created, false);
  json cs = json::array();
  int64_t completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    completion_tokens += c.completion_tokens;
    std::vector<const BatchEvent*> toks;
    for (const BatchEvent& e : c.tokens) toks.push_back(&e);
    json lp = nullptr;
    if (r.logprobs >= 0) lp = r.endpoint == Endpoint::Chat ? chat_logprobs(toks) : completion_logprobs(toks, 0);
    json choice = {{"index", i}, {"logprobs", lp}, {"finish_reason", finish_reason(c.stop)}};
    if (r.endpoint == Endpoint::Chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    cs.push_back(choice);
  }
  out["choices"] = cs;
  out["usage"] = usage(prompt_tokens, completion_tokens);
  return out;
}

json chunk(const ApiRequest& r, const std::string& id, int64_t created, int64_t index, const std::string& text,
           const BatchEvent* token, bool first) {
  json out = head(r, id, created, true);
  json lp = nullptr;
  if (token && r.logprobs >= 0)
    lp = r.endpoint == Endpoint::Chat ? chat_logprobs({token}) : completion_logprobs({token}, 0);
  json choice = {{"index", index}, {"logprobs", lp}, {"finish_reason", nullptr}};
  if (r.endpoint == Endpoint::Chat) {
    json delta = {{"content", text}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  out["choices"] = json::array({choice});
  return out;
}

json final_chunk(const ApiRequest& r, const std::string& id, int64_t created, int64_t index, StopReason stop,
                 const json& use) {
  json out = head(r, id, created, true);
  json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", finish_reason(stop)}};
  if (r.endpoint == Endpoint::Chat)
    choice["delta"] = json::object();
  else
    choice["text"] = "";
  out["choices"] = json::array({choice});
  if (!use.is_null()) out["usage"] = use;
  return out;
}

}  // namespace stem::serve
