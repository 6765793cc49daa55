// stem serve as a user runs it: the binary started on a free loopback port
// with the trained fact model and a swap overlay in --edits, then
//  - the official OpenAI client (tests/serve/client_test.mjs, Node) checks
//    completions, chat, streaming, stop strings, n, logprobs, errors, the
//    malformed-request set, disconnects, tokenize and metrics, and that greedy
//    text equals `stem generate --greedy` with and without the edit, alone
//    and concurrently;
//  - a bounded loopback load test (tests/serve/load_test.mjs): 16 streaming
//    clients, 0 failures, 0 slots left busy;
//  - SIGTERM while a stream runs: the stream still ends with [DONE], and the
//    server exits 0;
//  - startup errors: an unknown model directory, a port in use, a bad --name.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli_test_util.h"
#include "edit_test_util.h"

extern char** environ;

namespace stem {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using test::stem_cmd;

std::string q(const std::string& s) { return "'" + s + "'"; }

// A running `stem serve`: its pid, URL and output files.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& args, const fs::path& dir) : out_(dir / "serve.out"), err_(dir / "serve.err") {
    std::vector<std::string> argv = {STEM_BINARY, "serve"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_EQ(posix_spawn(&pid_, STEM_BINARY, &fa, nullptr, cargv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 600 && url_.empty(); ++i) {  // the URL is printed before the model loads
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(out_);
      std::string line;
      if (std::getline(in, line) && line.rfind("listening on ", 0) == 0) url_ = line.substr(13);
      if (exited()) break;
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }
  bool exited() {
    if (status_ >= 0) return true;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) != pid_) return false;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return true;
  }
  // Waits for the exit code (-1 on timeout).
  int wait(double seconds) {
    for (int i = 0; i < seconds * 20 && !exited(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return exited() ? status_ : -1;
  }
  bool ready() {
    for (int i = 0; i < 600; ++i) {
      httplib::Client c(url_);
      if (auto r = c.Get("/health"); r && r->status == 200) return true;
      if (exited()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::string err() const {
    std::ifstream in(err_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  fs::path out_, err_;
  pid_t pid_ = -1;
  int status_ = -1;
  std::string url_;
};

class Serve : public test::TempDirTest {
 protected:
  // The trained model, its swap overlay in edits/, and what `stem generate
  // --greedy` says for a few prompts with and without it.
  void SetUp() override {
    TempDirTest::SetUp();
    const auto& t = edit_test::trained();
    model_ = t.model;
    fs::create_directories(dir_ / "edits");
    const auto& subjects = t.corpus.subjects;
    auto r = stem_cmd("edit swap --model " + model_ + " --from " + q(subjects[1].name) + " --to " +
                      q(subjects[0].name) + " --out " + p("edits/swap.ovl"));
    ASSERT_EQ(r.code, 0) << r.err;
    json cases = json::array();
    for (const auto& query : t.corpus.queries) {
      if (query.subject > 2 || query.template_index > 1) continue;
      for (bool edited : {false, true}) {
        auto g = stem_cmd("generate --model " + model_ + " --prompt " + q(query.prompt) + " --greedy -n 12 --json" +
                          (edited ? " --edit " + p("edits/swap.ovl") : ""));
        ASSERT_EQ(g.code, 0) << g.err;
        const json j = json::parse(g.out);
        cases.push_back({{"prompt", query.prompt},
                         {"model", edited ? "base+swap" : "base"},
                         {"max_tokens", 12},
                         {"text", j["text"]},
                         {"finish_reason", j["stop"] == "eos" || j["stop"] == "stop" ? "stop" : "length"}});
      }
    }
    std::ofstream(p("expected.json")) << json{{"model", "base"}, {"edited_model", "base+swap"}, {"cases", cases},
                                             {"context", 64}}
                                             .dump(1);
  }
  static std::string node(const std::string& script, const std::string& args) {
    const std::string dir = std::string(STEM_SOURCE_DIR) + "/tests/serve";
    EXPECT_TRUE(fs::exists(dir + "/node_modules/openai")) << "the test clients are not installed: bash scripts/setup.sh";
    return "node " + dir + "/" + script + " " + args;
  }
  std::string model_;
};

TEST_F(Serve, OpenAIClientLoadAndGracefulStop) {
  ServerProcess s({"--model", model_, "--name", "base", "--port", "0", "--parallel", "4", "--edits", p("edits"),
                   "--api-key", "sk-test"},
                  dir_);
  ASSERT_FALSE(s.url().empty()) << s.err();
  ASSERT_TRUE(s.ready()) << s.err();
  // The official client, the malformed-request set and the greedy checks.
  auto r = test::stem_cmd_raw(node("client_test.mjs", "--url " + s.url() + " --expect " + p("expected.json") +
                                                         " --api-key sk-test"));
  EXPECT_EQ(r.code, 0) << r.out << r.err << s.err();
  // Bounded load: 16 streaming clients, 48 requests.
  r = test::stem_cmd_raw(node("load_test.mjs", "--url " + s.url() + " --model base --clients 16 --requests 48 "
                                               "--max-tokens 16 --timeout-s 120 --api-key sk-test --json"));
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  // SIGTERM during a stream: it still completes, then the server exits 0.
  httplib::Client c(s.url());
  std::string body;
  std::atomic<bool> first{false};
  std::thread reader([&] {
    const json req = {{"model", "base"}, {"prompt", edit_test::trained().corpus.queries[0].prompt},
                      {"max_tokens", 40}, {"stream", true}, {"temperature", 0.9}};
    httplib::Request post;
    post.method = "POST";
    post.path = "/v1/completions";
    post.body = req.dump();
    post.set_header("Content-Type", "application/json");
    post.set_header("Authorization", "Bearer sk-test");
    post.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      body.append(data, n);
      first = true;
      return true;
    };
    httplib::Response res;
    httplib::Error error;
    c.send(post, res, error);
  });
  for (int i = 0; i < 200 && !first; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::kill(s.pid(), SIGTERM);
  reader.join();
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos) << body;
  EXPECT_EQ(s.wait(30), 0) << s.err();
  EXPECT_NE(s.err().find("stopped after"), std::string::npos) << s.err();
}

TEST_F(Serve, StartupErrorsNameTheProblem) {
  auto r = stem_cmd("serve --model " + p("nothing") + " --port 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("nothing"), std::string::npos) << r.err;
  r = stem_cmd("serve --model " + model_ + " --name a+b --port 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--name"), std::string::npos) << r.err;
  ServerProcess first({"--model", model_, "--port", "0"}, dir_);
  ASSERT_FALSE(first.url().empty());
  const std::string port = first.url().substr(first.url().rfind(':') + 1);
  r = stem_cmd("serve --model " + model_ + " --port " + port);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot listen"), std::string::npos) << r.err;
  r = stem_cmd("serve --model " + model_ + " --port 0 --edits " + p("none"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--edits"), std::string::npos) << r.err;
  EXPECT_EQ(stem_cmd("serve --help").code, 0);
}

}  // namespace
}  // namespace stem
