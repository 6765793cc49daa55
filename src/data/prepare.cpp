// Preparing data (stem::prepare_data, `stem prepare`): text files -> a data
// folder the trainer reads (tokenizer.model, train.tok, val.tok, data.json;
// see io/token_shards.h). It does not clean
// text (scripts/make_corpus.sh does) and does not shuffle or batch tokens
// (the trainer does).
//
// Documents. A document is a run of consecutive paragraphs (blank-line
// separated) of one file: it closes at the first paragraph break once it holds
// --doc-bytes bytes, or at the first line break once it holds twice that (for
// text without blank lines, e.g. one fact per line); a line longer than that
// is cut at a space. A document never spans two files, so a short file is one
// document. Within a document, lines keep their single "\n" and a paragraph
// break is "\n\n" (runs of blank lines collapse; "\r" is dropped). Each
// document is stored as BOS + ids + EOS.
//
// Split. A document goes to val when a hash of (its text, --seed) falls below
// --val-fraction, so the split is reproducible, independent of file order,
// and identical documents land on the same side. If that leaves val (or train)
// empty, the document with the lowest (highest) hash moves over. The tokenizer
// is trained only on (a sample of) train documents, so val stays held out.
//
// Two passes stream the inputs: the first validates (NUL bytes, UTF-8),
// counts and hashes documents and keeps a bounded sample (--sample-bytes) for
// SentencePiece; the second encodes batches of documents on all threads and
// streams ids to the shards. Everything is written in OUT.tmp-<pid> and renamed
// to OUT at the end; on any failure that folder is removed, so OUT is never
// half written.
#include "stem/data.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "stem/format.h"
#include "core/timer.h"
#include "io/files.h"
#include "io/token_shards.h"
#include "io/tokenizer.h"

namespace stem {
namespace fs = std::filesystem;

namespace {

using Options = PrepareOptions;

struct Source {
  std::string path;
  int64_t bytes = 0, docs = 0;
  int64_t train_docs = 0, val_docs = 0, train_tokens = 0, val_tokens = 0;
};


// ---------------------------------------------------------------- inputs

// Files named on the command line, and *.txt files under named folders
// (recursively, sorted), each once.
Result<std::vector<Source>> collect_inputs(const std::vector<std::string>& inputs) {
  std::vector<Source> out;
  std::set<std::string> seen;
  auto add = [&](const fs::path& p) -> Status {
    std::error_code ec;
    const std::string key = fs::weakly_canonical(p, ec).string();
    if (!seen.insert(ec ? p.string() : key).second) return ok_status();
    const auto size = fs::file_size(p, ec);
    if (ec) return Status::error(p.string() + ": cannot stat: " + ec.message());
    out.push_back({p.string(), static_cast<int64_t>(size)});
    return ok_status();
  };
  if (inputs.empty()) return Status::error("no inputs (give --input FILE_OR_FOLDER)");
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    if (!fs::exists(st)) return Status::error(in + ": no such file or folder");
    if (fs::is_directory(st)) {
      std::vector<fs::path> files;
      for (fs::recursive_directory_iterator it(in, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec))
        if (it->is_regular_file() && it->path().extension() == ".txt") files.push_back(it->path());
      if (ec) return Status::error(in + ": cannot list: " + ec.message());
      if (files.empty()) return Status::error(in + ": folder holds no *.txt files");
      std::sort(files.begin(), files.end());
      for (const auto& f : files) STEM_RETURN_IF_ERROR(add(f));
    } else if (fs::is_regular_file(st)) {
      STEM_RETURN_IF_ERROR(add(in));
    } else {
      return Status::error(in + ": not a regular file or folder");
    }
  }
  return out;
}

// Index of the first byte of `s` that is not valid UTF-8, or npos.
size_t invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;  // no surrogates
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;  // <= U+10FFFF
    else return i;
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; });
}

// Streams one file and cuts it into documents (see the top of this file).
// Checks every byte on the way: a NUL or invalid UTF-8 is an error naming the
// file and the byte offset. Holds one line and one document at a time.
class DocumentReader {
 public:
  DocumentReader(int64_t doc_bytes, std::function<void(int64_t bytes_read)> on_progress)
      : doc_bytes_(static_cast<size_t>(doc_bytes)), on_progress_(std::move(on_progress)) {}

  Status read(const std::string& path, const std::function<Status(std::string_view doc)>& on_doc) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return Status::error(path + ": cannot open: " + std::strerror(errno));
    std::unique_ptr<FILE, int (*)(FILE*)> closer(f, &std::fclose);
    path_ = &path;
    on_doc_ = &on_doc;
    doc_.clear();
    pending_break_ = false;
    std::string carry;  // the unfinished last line of the previous block
    std::vector<char> block(1 << 20);
    int64_t offset = 0;  // file offset of carry[0]
    for (;;) {
      const size_t got = std::fread(block.data(), 1, block.size(), f);
      if (got == 0) {
        if (std::ferror(f)) return Status::error(path + ": read failed: " + std::strerror(errno));
        break;
      }
      const std::string_view b(block.data(), got);
      if (const size_t z = b.find('\0'); z != std::string_view::npos)
        return Status::error(path + ": looks binary (NUL byte at offset " +
                             std::to_string(offset + static_cast<int64_t>(carry.size() + z)) + ")");
      carry.append(b);
      size_t start = 0;
      for (size_t nl; (nl = carry.find('\n', start)) != std::string::npos; start = nl + 1)
        STEM_RETURN_IF_ERROR(line(std::string_view(carry).substr(start, nl - start), offset + static_cast<int64_t>(start)));
      carry.erase(0, start);
      offset += static_cast<int64_t>(start);
      if (on_progress_) on_progress_(static_cast<int64_t>(got));
    }
    if (!carry.empty()) STEM_RETURN_IF_ERROR(line(carry, offset));
    return emit();
  }

 private:
  Status line(std::string_view s, int64_t offset) {
    if (const size_t bad = invalid_utf8(s); bad != std::string_view::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(s[bad]));
      return Status::error(*path_ + ": not UTF-8 text (invalid byte " + hex + " at offset " +
                           std::to_string(offset + static_cast<int64_t>(bad)) + ")");
    }
    if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    if (is_blank(s)) {
      if (doc_.size() >= doc_bytes_) return emit();
      pending_break_ = !doc_.empty();
      return ok_status();
    }
    // A line longer than a document: cut at a space (or a character boundary).
    while (s.size() > 2 * doc_bytes_) {
      size_t cut = s.rfind(' ', doc_bytes_);
      if (cut == std::string_view::npos || cut == 0) {
        cut = doc_bytes_;
        while (cut > 1 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
      }
      STEM_RETURN_IF_ERROR(append(s.substr(0, cut)));
      STEM_RETURN_IF_ERROR(emit());
      s.remove_prefix(cut);
    }
    return append(s);
  }

  Status append(std::string_view s) {
    if (!doc_.empty()) {
      if (doc_.size() >= 2 * doc_bytes_) {
        STEM_RETURN_IF_ERROR(emit());
      } else {
        doc_ += pending_break_ ? "\n\n" : "\n";
      }
    }
    pending_break_ = false;
    doc_.append(s);
    return ok_status();
  }

  Status emit() {
    pending_break_ = false;
    if (doc_.empty()) return ok_status();
    Status st = (*on_doc_)(doc_);
    doc_.clear();
    return st;
  }

  size_t doc_bytes_;
  std::function<void(int64_t)> on_progress_;
  const std::string* path_ = nullptr;
  const std::function<Status(std::string_view)>* on_doc_ = nullptr;
  std::string doc_;
  bool pending_break_ = false;
};

// ---------------------------------------------------------------- split

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// A uniform number in [0, 1) from a document's text and the seed; `stream`
// separates independent uses (split, tokenizer sample).
double doc_uniform(uint64_t text_hash, uint64_t seed, uint64_t stream) {
  const uint64_t x = splitmix64(text_hash ^ splitmix64(seed * 2 + stream));
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

// ---------------------------------------------------------------- the command

// OUT.tmp-<pid>, removed on destruction unless released.
class TempDir {
 public:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }
  void release() { path_.clear(); }

 private:
  std::string path_;
};

Status check_options(const Options& o) {
  if ((o.tokenizer.empty() && o.vocab_size < 260) || o.vocab_size > (int64_t{1} << 31))
    return Status::error("--vocab-size " + std::to_string(o.vocab_size) +
                         " is out of range: it must exceed 259 (256 byte pieces, <unk>, <s>, </s>)");
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    return Status::error("--val-fraction " + std::to_string(o.val_fraction) + " is outside [0, 1)");
  if (o.doc_bytes < 1) return Status::error("--doc-bytes " + std::to_string(o.doc_bytes) + " must be positive");
  if (o.sample_bytes < 1) return Status::error("--sample-bytes " + std::to_string(o.sample_bytes) + " must be positive");
  if (o.threads < 0) return Status::error("--threads " + std::to_string(o.threads) + " must be >= 0");
  if (o.out.empty()) return Status::error("--out is empty");
  return ok_status();
}

}  // namespace

Result<std::string> prepare_data(const PrepareOptions& o, const PrepareProgress& progress) {
  STEM_RETURN_IF_ERROR(check_options(o));
  const core::Timer timer;
  std::string out = o.out;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  std::error_code ec;
  const bool replace = fs::exists(out, ec);
  if (replace && !o.force) return Status::error(out + ": already exists (use --force to replace it)");
  if (replace && !fs::is_directory(out, ec)) return Status::error(out + ": exists and is not a folder");
  // --force replaces an earlier output, never an unrelated folder.
  if (replace && !fs::is_empty(out, ec) && !fs::exists(fs::path(out) / "data.json", ec))
    return Status::error(out + ": exists and is not a stem data folder (no data.json): not replacing it, even with --force");

  // A given tokenizer is checked before any text is read (errors name its file).
  if (!o.tokenizer.empty()) STEM_RETURN_IF_ERROR(io::Tokenizer::load(o.tokenizer).status());
  STEM_ASSIGN_OR_RETURN(std::vector<Source> sources, collect_inputs(o.inputs));
  int64_t total_bytes = 0;
  for (const auto& s : sources) total_bytes += s.bytes;

  // Pass 1: validate, count and hash documents, sample text for the tokenizer.
  const double sample_rate =
      total_bytes > o.sample_bytes ? static_cast<double>(o.sample_bytes) / static_cast<double>(total_bytes) : 1.0;
  std::vector<double> split_u;                                // per document, in input order
  std::vector<std::pair<int64_t, std::string>> sample;        // (document index, text)
  {
    const auto bar = [&](int64_t done) { if (progress) progress("scanning", done, total_bytes); };
    int64_t done = 0;
    DocumentReader reader(o.doc_bytes, [&](int64_t n) { bar(done += n); });
    for (Source& src : sources) {
      Status st = reader.read(src.path, [&](std::string_view doc) {
        const uint64_t h = fnv1a(doc);
        split_u.push_back(doc_uniform(h, o.seed, 0));
        if (o.tokenizer.empty() && (sample_rate >= 1.0 || doc_uniform(h, o.seed, 1) < sample_rate))
          sample.emplace_back(static_cast<int64_t>(split_u.size()) - 1, std::string(doc));
        ++src.docs;
        return ok_status();
      });
      if (!st.ok()) return st;
    }
  }
  const int64_t n_docs = static_cast<int64_t>(split_u.size());
  if (n_docs == 0) {
    if (sources.size() == 1) return Status::error(sources[0].path + ": empty (no text to prepare)");
    return Status::error("no text in the " + std::to_string(sources.size()) + " input files (all empty or blank)");
  }

  std::vector<uint8_t> is_val(static_cast<size_t>(n_docs), 0);
  int64_t n_val = 0;
  for (int64_t i = 0; i < n_docs; ++i) n_val += is_val[i] = split_u[i] < o.val_fraction;
  if (o.val_fraction > 0 && n_val == 0) {
    if (n_docs < 2)
      return Status::error("the inputs make one document (" + human_bytes(static_cast<double>(total_bytes)) +
                           "), too few to hold out a validation split: add text, lower --doc-bytes, or "
                           "use --val-fraction 0");
    is_val[std::min_element(split_u.begin(), split_u.end()) - split_u.begin()] = 1;
    n_val = 1;
  }
  if (n_val == n_docs) {
    if (n_docs < 2)
      return Status::error("the inputs make one document, too few for both a train and a validation split");
    is_val[std::max_element(split_u.begin(), split_u.end()) - split_u.begin()] = 0;
    --n_val;
  }
  std::vector<std::string> sentences;
  int64_t sample_text = 0;
  for (auto& [i, text] : sample)
    if (!is_val[i]) {
      sample_text += static_cast<int64_t>(text.size());
      sentences.push_back(std::move(text));
    }
  sample.clear();
  sample.shrink_to_fit();

  // Everything below is written in the temporary folder.
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) return Status::error(parent.string() + ": cannot create folder: " + ec.message());
  }
  TempDir tmp(out + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp.path(), ec);
  if (!fs::create_directory(tmp.path(), ec))
    return Status::error(tmp.path() + ": cannot create folder: " + (ec ? ec.message() : "exists"));
  const std::string tok_path = tmp.path() + "/tokenizer.model";

  if (!o.tokenizer.empty()) {  // encode with the given one, a byte-for-byte copy
    fs::copy_file(o.tokenizer, tok_path, ec);
    if (ec) return Status::error(o.tokenizer + ": cannot copy the tokenizer: " + ec.message());
  } else {
    if (progress) progress("training tokenizer", 0, 1);
    io::TokenizerTrainOptions topt;
    topt.num_threads = o.threads;
    Status st = io::Tokenizer::train_on_sentences(sentences, tok_path, o.vocab_size, topt);
    if (!st.ok()) {
      // "tokenizer: ..." already says what is wrong; say what it saw.
      return Status::error(st.message() + " [trained on " + human_bytes(static_cast<double>(sample_text)) +
                           " of text from " + std::to_string(sources.size()) + " file(s)]");
    }
  }
  sentences.clear();
  sentences.shrink_to_fit();
  STEM_ASSIGN_OR_RETURN(io::Tokenizer tok, io::Tokenizer::load(tok_path));
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  if (bos < 0 || eos < 0)
    return Status::error((o.tokenizer.empty() ? tok_path : o.tokenizer) + ": the tokenizer has no BOS/EOS pieces");
  const int64_t vocab_size = o.tokenizer.empty() ? o.vocab_size : tok.vocab_size();

  // Pass 2: encode in batches on all threads, write in document order.
  STEM_ASSIGN_OR_RETURN(io::TokenShardWriter train_w, io::TokenShardWriter::create(tmp.path() + "/train.tok", vocab_size));
  STEM_ASSIGN_OR_RETURN(io::TokenShardWriter val_w, io::TokenShardWriter::create(tmp.path() + "/val.tok", vocab_size));
  if (o.threads > 0) omp_set_num_threads(o.threads);
  int64_t doc_index = 0, train_bytes = 0, val_bytes = 0;
  {
    const auto bar = [&](int64_t done) { if (progress) progress("tokenizing", done, total_bytes); };
    int64_t done = 0;
    std::vector<std::string> batch;
    std::vector<std::vector<int32_t>> ids;
    int64_t batch_bytes = 0;
    Source* src = nullptr;
    auto flush = [&]() -> Status {
      const int64_t n = static_cast<int64_t>(batch.size());
      ids.resize(batch.size());
#pragma omp parallel for schedule(dynamic, 4)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<int32_t> v = tok.encode(batch[i]);
        ids[i].clear();
        ids[i].reserve(v.size() + 2);
        ids[i].push_back(bos);
        ids[i].insert(ids[i].end(), v.begin(), v.end());
        ids[i].push_back(eos);
      }
      for (int64_t i = 0; i < n; ++i, ++doc_index) {
        if (doc_index >= n_docs)
          return Status::error(src->path + ": changed while being read (more documents than in the first pass)");
        const int64_t t = static_cast<int64_t>(ids[i].size()), b = static_cast<int64_t>(batch[i].size());
        if (is_val[doc_index]) {
          STEM_RETURN_IF_ERROR(val_w.append_document(ids[i]));
          ++src->val_docs, src->val_tokens += t, val_bytes += b;
        } else {
          STEM_RETURN_IF_ERROR(train_w.append_document(ids[i]));
          ++src->train_docs, src->train_tokens += t, train_bytes += b;
        }
      }
      batch.clear();
      batch_bytes = 0;
      return ok_status();
    };
    DocumentReader reader(o.doc_bytes, [&](int64_t n) {
      bar(done += n);
    });
    for (Source& s : sources) {
      src = &s;
      Status st = reader.read(s.path, [&](std::string_view doc) {
        batch.emplace_back(doc);
        batch_bytes += static_cast<int64_t>(doc.size());
        return batch_bytes >= (int64_t{4} << 20) ? flush() : ok_status();
      });
      if (st.ok()) st = flush();  // documents never span files: flush per file for the counts
      if (!st.ok()) return st;
      if (s.train_docs + s.val_docs != s.docs)
        return Status::error(s.path + ": changed while being read (" + std::to_string(s.docs) + " documents, then " +
                             std::to_string(s.train_docs + s.val_docs) + ")");
    }
  }
  STEM_RETURN_IF_ERROR(train_w.finish());
  STEM_RETURN_IF_ERROR(val_w.finish());

  nlohmann::json src_json = nlohmann::json::array();
  for (const auto& s : sources)
    src_json.push_back({{"path", s.path}, {"bytes", s.bytes}, {"docs", s.docs}, {"train_docs", s.train_docs},
                        {"val_docs", s.val_docs}, {"train_tokens", s.train_tokens}, {"val_tokens", s.val_tokens}});
  const int64_t n_tokens = train_w.n_tokens() + val_w.n_tokens();
  nlohmann::json meta = {
      {"format", io::kDataFormat},
      {"version", io::kDataVersion},
      {"tokenizer", o.tokenizer.empty()
                        ? nlohmann::json{{"file", "tokenizer.model"}, {"type", "sentencepiece-bpe"},
                                         {"byte_fallback", true}, {"trained_on_bytes", sample_text}}
                        : nlohmann::json{{"file", "tokenizer.model"}, {"type", "sentencepiece"},
                                         {"copied_from", o.tokenizer}}},
      {"vocab_size", vocab_size},
      {"bos_id", bos},
      {"eos_id", eos},
      {"documents", {{"unit", "paragraph groups of about doc_bytes, never across files; BOS + ids + EOS"},
                     {"doc_bytes", o.doc_bytes}, {"count", n_docs}}},
      {"split", {{"val_fraction", o.val_fraction}, {"seed", o.seed}, {"by", "hash of document text"}}},
      {"train", {{"file", "train.tok"}, {"docs", train_w.n_docs()}, {"tokens", train_w.n_tokens()},
                 {"text_bytes", train_bytes}}},
      {"val", {{"file", "val.tok"}, {"docs", val_w.n_docs()}, {"tokens", val_w.n_tokens()}, {"text_bytes", val_bytes}}},
      {"text_bytes", total_bytes},
      {"bytes_per_token", n_tokens > 0 ? static_cast<double>(train_bytes + val_bytes) / static_cast<double>(n_tokens) : 0.0},
      {"sources", src_json},
      {"created_by", "stem 0.1.0"},
  };
  STEM_RETURN_IF_ERROR(io::write_text_atomic(tmp.path() + "/data.json", meta.dump(2) + "\n"));

  // Into place: the old folder (with --force) steps aside first, and goes
  // only once the new one is there.
  const std::string old = out + ".old-" + std::to_string(::getpid());
  if (replace) {
    fs::rename(out, old, ec);
    if (ec) return Status::error(out + ": cannot move the existing folder aside: " + ec.message());
  }
  fs::rename(tmp.path(), out, ec);
  if (ec) {
    std::error_code ec2;
    if (replace) fs::rename(old, out, ec2);
    return Status::error(out + ": cannot rename '" + tmp.path() + "' into place: " + ec.message());
  }
  tmp.release();
  if (replace) fs::remove_all(old, ec);
  meta["out"] = out;
  meta["seconds"] = timer.seconds();
  return meta.dump();
}


}  // namespace stem
