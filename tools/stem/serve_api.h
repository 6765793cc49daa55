// The OpenAI API's JSON for `stem serve`: request bodies checked and turned
// into stem::BatchRequest, events turned into response objects and stream
// chunks, errors in OpenAI's shape, and the chat template. Plain functions of
// JSON; no HTTP, no threads, no model.
//
// The chat template (for base models, which know no chat format): an optional
// system message first as its own paragraph, then each turn on its own line
// as "User: ..." or "Assistant: ...", then "Assistant:" for the reply; the
// stop string "\nUser:" ends the reply where the model starts the next turn.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "stem/batch.h"

namespace stem::serve {

using json = nlohmann::json;

// An error to answer with: HTTP status and OpenAI's error object.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string code;   // "" -> null
  std::string param;  // "" -> null

  ApiError() = default;
  ApiError(int status_, std::string message_, std::string type_ = "invalid_request_error", std::string code_ = "",
           std::string param_ = "")
      : status(status_), message(std::move(message_)), type(std::move(type_)), code(std::move(code_)),
        param(std::move(param_)) {}
};
json error_body(const ApiError& e);
// JSON text; invalid UTF-8 (quoted from a bad body) replaced, never thrown.
inline std::string text_of(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

enum class Endpoint { Completions, Chat };

// A request body, checked field by field.
struct ApiRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;        // as asked ("" when not given)
  BatchRequest batch;       // prompt, options; edit filled in by the caller
  bool stream = false;
  int64_t logprobs = -1;    // completions: top alternatives; chat: top_logprobs (with logprobs: true)
  bool max_tokens_given = false;
};

// The error a refusal of the generator is answered with (context too long:
// 400; unknown edit: 404; busy or shutting down: 503).
ApiError refusal_error(Refusal why, const Status& st);

// Parses a body as JSON: a syntax error or a number out of range is a 400.
bool parse_body(const std::string& text, json* body, ApiError* err);

// Parses and checks a body: every known field's type and range; unknown
// fields are ignored, as OpenAI's clients send extras. Returns false and
// fills `err` on a bad request.
bool parse_request(Endpoint ep, const json& body, ApiRequest* out, ApiError* err);

// The chat template above, and its stop string. Messages as checked by
// parse_request (role and content strings).
std::string chat_prompt(const json& messages);
inline constexpr const char* kChatStop = "\nUser:";

// "stop" for EOS or a stop string, "length" for max_tokens or the context.
const char* finish_reason(StopReason r);

// One completion gathered from its events (non-streaming responses).
struct Choice {
  std::string text;
  std::vector<BatchEvent> tokens;  // with logprobs
  StopReason stop = StopReason::Length;
  int64_t completion_tokens = 0;
};

// Logprobs of a choice's tokens in each endpoint's format.
json completion_logprobs(const std::vector<const BatchEvent*>& tokens, int64_t text_offset);
json chat_logprobs(const std::vector<const BatchEvent*>& tokens);

// Whole responses and stream chunks.
json response(const ApiRequest& r, const std::string& id, int64_t created, const std::vector<Choice>& choices,
              int64_t prompt_tokens);
json chunk(const ApiRequest& r, const std::string& id, int64_t created, int64_t index, const std::string& text,
           const BatchEvent* token, bool first);
// A choice's last chunk: its finish_reason, and the request's usage when it
// is the last choice to finish (`usage` not null).
json final_chunk(const ApiRequest& r, const std::string& id, int64_t created, int64_t index, StopReason stop,
                 const json& usage);
json usage(int64_t prompt_tokens, int64_t completion_tokens);

}  // namespace stem::serve
