// Fuzz target: the body of a request to `stem serve` (/v1/completions and
// /v1/chat/completions), parsed and checked field by field by the server's
// own functions; an accepted chat request's prompt is built from its
// messages. Any exception escaping them would be a 500 instead of a 400.
#include "../tools/stem/serve_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  serve::json body;
  serve::ApiError err;
  if (!serve::parse_body(std::string(reinterpret_cast<const char*>(data), size), &body, &err)) {
    (void)serve::text_of(serve::error_body(err));
    return 0;
  }
  for (serve::Endpoint ep : {serve::Endpoint::Completions, serve::Endpoint::Chat}) {
    serve::ApiRequest r;
    serve::ApiError err;
    if (serve::parse_request(ep, body, &r, &err)) {
      if (ep == serve::Endpoint::Chat) (void)serve::chat_prompt(body.at("messages"));
    } else {
      (void)serve::text_of(serve::error_body(err));
    }
  }
  return 0;
}
