// OpenAI requests for `stem serve` (see serve_api.h): errors in OpenAI's
// shape, bodies checked field by field, the chat template, refusals as
// errors. Responses are serve_responses.cpp's.
#include "serve_api.h"

#include <random>

namespace stem::serve {

json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)}}}};
}

namespace {

// Field checks: each returns false with `err` naming the field and value.
struct Fields {
  const json& body;
  ApiError* err;

  bool bad(const std::string& field, const std::string& what) {
    *err = ApiError{400, "'" + field + "': " + what, "invalid_request_error", "", field};
    return false;
  }
  bool has(const char* f) const { return body.contains(f) && !body[f].is_null(); }
  bool integer(const char* f, int64_t lo, int64_t hi, int64_t* out) {
    if (!has(f)) return true;
    const json& v = body[f];
    if (!v.is_number_integer()) return bad(f, "expected an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
      return bad(f, std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    *out = x;
    return true;
  }
  bool number(const char* f, double lo, double hi, bool open_lo, float* out) {
    if (!has(f)) return true;
    const json& v = body[f];
    if (!v.is_number()) return bad(f, "expected a number, got " + v.dump());
    const double x = v.get<double>();
    if (x < lo || x > hi || (open_lo && x == lo))
      return bad(f, v.dump() + " is outside " + std::string(open_lo ? "(" : "[") + json(lo).dump() + ", " +
                        json(hi).dump() + "]");
    *out = static_cast<float>(x);
    return true;
  }
  bool boolean(const char* f, bool* out) {
    if (!has(f)) return true;
    if (!body[f].is_boolean()) return bad(f, "expected true or false, got " + body[f].dump());
    *out = body[f].get<bool>();
    return true;
  }
};

bool parse_prompt(const json& p, BatchRequest* b, Fields& F) {
  if (p.is_string()) {
    b->prompt = p.get<std::string>();
    return true;
  }
  if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    b->prompt = p[0].get<std::string>();
    return true;
  }
  if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& x) { return x.is_number_integer(); })) {
    for (const json& x : p) {
      const int64_t id = x.get<int64_t>();
      if (id < 0 || id > INT32_MAX) return F.bad("prompt", "token id " + std::to_string(id) + " is out of range");
      b->prompt_ids.push_back(static_cast<int32_t>(id));
    }
    return true;
  }
  return F.bad("prompt", "expected a string, one string in an array, or an array of token ids");
}

}  // namespace

std::string chat_prompt(const json& messages) {
  std::string out;
  for (const json& m : messages) {
    const std::string role = m["role"].get<std::string>();
    const std::string content = m["content"].get<std::string>();
    if (role == "system" || role == "developer")
      out += content + "\n\n";
    else
      out += (role == "assistant" ? "Assistant: " : "User: ") + content + "\n";
  }
  return out + "Assistant:";
}

bool parse_body(const std::string& text, json* body, ApiError* err) {
  try {
    *body = json::parse(text);
    return true;
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers too large
    *err = ApiError{400, std::string("the body is not valid JSON: ") + e.what()};
    return false;
  }
}

bool parse_request(Endpoint ep, const json& body, ApiRequest* out, ApiError* err) {
  if (!body.is_object()) {
    *err = ApiError{400, "the request body must be a JSON object"};
    return false;
  }
  Fields F{body, err};
  ApiRequest& r = *out;
  r.endpoint = ep;
  BatchRequest& b = r.batch;
  if (F.has("model")) {
    if (!body["model"].is_string()) return F.bad("model", "expected a string, got " + body["model"].dump());
    r.model = body["model"].get<std::string>();
  }
  if (ep == Endpoint::Completions) {
    if (!F.has("prompt")) return F.bad("prompt", "required");
    if (!parse_prompt(body["prompt"], &b, F)) return false;
    if (F.has("echo") && body["echo"] != false) return F.bad("echo", "not supported");
    if (F.has("suffix")) return F.bad("suffix", "not supported");
  } else {
    if (!F.has("messages")) return F.bad("messages", "required");
    const json& ms = body["messages"];
    if (!ms.is_array() || ms.empty()) return F.bad("messages", "expected a non-empty array of messages");
    json checked = json::array();
    for (size_t i = 0; i < ms.size(); ++i) {
      const json& m = ms[i];
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        return F.bad(at, "expected an object with a string 'role'");
      const std::string role = m["role"].get<std::string>();
      if (role != "system" && role != "developer" && role != "user" && role != "assistant")
        return F.bad(at + ".role", "'" + role + "' is not system, developer, user or assistant");
      // Content: a string, or an array of text parts.
      const json c = m.contains("content") ? m["content"] : json(nullptr);
      std::string text;
      if (c.is_string()) {
        text = c.get<std::string>();
      } else if (c.is_array()) {
        for (const json& part : c) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
            return F.bad(at + ".content", "only text parts ({\"type\": \"text\", \"text\": ...}) are supported");
          text += part["text"].get<std::string>();
        }
      } else {
        return F.bad(at + ".content", "expected a string or an array of text parts");
      }
      checked.push_back({{"role", role}, {"content", text}});
    }
    b.prompt = chat_prompt(checked);
    b.gen.stop.push_back(kChatStop);
  }
  // Sampling: OpenAI's defaults (temperature 1, no top-p or top-k cut); 0 is greedy.
  b.gen.sampler = SamplerConfig{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .greedy = false,
                                .seed = std::random_device{}()};
  if (!F.number("temperature", 0.0, 2.0, false, &b.gen.sampler.temperature)) return false;
  b.gen.sampler.greedy = b.gen.sampler.temperature == 0.0f;
  if (!F.number("top_p", 0.0, 1.0, true, &b.gen.sampler.top_p)) return false;
  if (!F.integer("top_k", 0, INT32_MAX, &b.gen.sampler.top_k)) return false;
  int64_t seed = 0;
  if (F.has("seed")) {
    if (!F.integer("seed", INT64_MIN, INT64_MAX, &seed)) return false;
    b.gen.sampler.seed = static_cast<uint64_t>(seed);
  }
  b.gen.max_new_tokens = ep == Endpoint::Completions ? 16 : 0;  // chat: to the end of the context
  const char* max_field = F.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.max_tokens_given = F.has(max_field);
  if (!F.integer(max_field, 1, INT32_MAX, &b.gen.max_new_tokens)) return false;
  if (!F.integer("n", 1, 16, &b.n)) return false;
  if (!F.boolean("stream", &r.stream)) return false;
  if (F.has("stream_options") && !body["stream_options"].is_object())
    return F.bad("stream_options", "expected an object");
  if (F.has("stop")) {
    const json& s = body["stop"];
    std::vector<std::string> stops;
    if (s.is_string()) {
      stops.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4 && std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); })) {
      for (const json& x : s) stops.push_back(x.get<std::string>());
    } else {
      return F.bad("stop", "expected a string or an array of up to 4 strings");
    }
    for (const std::string& x : stops) {
      if (x.empty()) return F.bad("stop", "a stop string is empty");
      b.gen.stop.push_back(x);
    }
  }
  if (ep == Endpoint::Completions) {
    if (!F.integer("logprobs", 0, 20, &r.logprobs)) return false;
  } else {
    bool want = false;
    if (!F.boolean("logprobs", &want)) return false;
    int64_t top = 0;
    if (!F.integer("top_logprobs", 0, 20, &top)) return false;
    if (F.has("top_logprobs") && !want) return F.bad("top_logprobs", "needs 'logprobs': true");
    if (want) r.logprobs = top;
  }
  b.top_logprobs = r.logprobs;
  b.gen.stop_at_eos = true;
  return true;
}

// The error a refusal of the generator is answered with.
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

}  // namespace stem::serve
