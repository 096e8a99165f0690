#include "engine/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace nanoserve {
namespace {

constexpr absl::string_view kEndOfTextText = "<|endoftext|>";
constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD

// GPT-2's pre-tokenizer regex,
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as Unicode's White_Space, which tiktoken's (Rust) \s
// matches; PCRE2's \s also matches U+180E, which is not White_Space.
std::string Gpt2Pattern() {
  const std::string space =
      R"(\t-\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";
  return absl::StrCat(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+)",  //
                      "| ?[^", space, R"(\p{L}\p{N}]+)",               //
                      "|[", space, "]+(?![^", space, "])",             //
                      "|[", space, "]+");
}

// GPT-2's bytes_to_unicode: byte b is spelled in encoder.json and vocab.bpe as
// code point b if printable, else as 256 + (its index among the others).
// Returns the inverse: code point -> byte, -1 for code points not used.
std::array<int, 512> CodePointToByte() {
  std::array<int, 512> byte_of;
  byte_of.fill(-1);
  int next_unprintable = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_of[printable ? b : next_unprintable++] = b;
  }
  return byte_of;
}

// Converts a vocabulary string (UTF-8 of bytes_to_unicode code points) to the
// bytes it stands for. False if it is not such a string.
bool VocabStringToBytes(absl::string_view s, std::string* bytes) {
  static const std::array<int, 512> byte_of = CodePointToByte();
  bytes->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char lead = s[i];
    int code_point = lead;
    if (lead >= 0x80) {  // all code points used are < 0x800: two bytes
      if ((lead & 0xE0) != 0xC0 || i + 1 == s.size()) return false;
      const unsigned char next = s[++i];
      if ((next & 0xC0) != 0x80) return false;
      code_point = (lead & 0x1F) << 6 | (next & 0x3F);
    }
    if (code_point >= 512 || byte_of[code_point] < 0) return false;
    bytes->push_back(static_cast<char>(byte_of[code_point]));
  }
  return true;
}

// Classifies the start of s (non-empty) as UTF-8. Returns n > 0 if s starts
// with a valid n-byte character; 0 if s is a valid but unfinished prefix of
// one; -k if s starts with an invalid sequence whose maximal subpart is k
// bytes (Unicode's "maximal subpart", k >= 1).
int Utf8Prefix(absl::string_view s) {
  const unsigned char lead = s[0];
  if (lead < 0x80) return 1;
  int length;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) == s.size()) return 0;
    const unsigned char c = s[i];
    if (c < low || c > high) return -i;
    low = 0x80;
    high = 0xBF;
  }
  return length;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::Status Malformed(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

uint64_t PairKey(int left, int right) {
  return static_cast<uint64_t>(left) << 32 | static_cast<uint32_t>(right);
}

}  // namespace

// GPT-2's pre-tokenizer regex, compiled once (JIT if available) and then
// shared read-only by all threads, as PCRE2 allows.
class Gpt2Tokenizer::Pretokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Pretokenizer>> Create() {
    int error;
    PCRE2_SIZE error_offset;
    const std::string pattern = Gpt2Pattern();
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InternalError(absl::StrCat("PCRE2 cannot compile GPT-2's pattern: ",
                                              reinterpret_cast<const char*>(message)));
    }
    // Without JIT support, matching falls back to the interpreter.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return absl::WrapUnique(new Pretokenizer(code));
  }

  ~Pretokenizer() { pcre2_code_free(code_); }

  // Calls on_piece for each piece of text, in order; the pieces concatenate to
  // text. Bytes that are not valid UTF-8 match no pattern and become pieces
  // of one byte each.
  template <typename OnPiece>
  void Split(absl::string_view text, OnPiece on_piece) const {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(code_, nullptr);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t offset = 0;
    while (offset < text.size()) {
      size_t start = text.size(), end = text.size();
      // Any failure (no match, or a resource limit) leaves the rest as
      // single bytes, which still decode to the text.
      const int matched = pcre2_match(code_, subject, text.size(), offset,
                                      /*options=*/0, match, nullptr);
      if (matched > 0) {
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
        start = ovector[0];
        end = ovector[1];
      }
      for (; offset < start; ++offset) on_piece(text.substr(offset, 1));
      if (start < end) on_piece(text.substr(start, end - start));
      offset = end;  // > the old offset: no pattern matches the empty string
    }
    pcre2_match_data_free(match);
  }

 private:
  explicit Pretokenizer(pcre2_code* code) : code_(code) {}
  pcre2_code* const code_;
};

Gpt2Tokenizer::Gpt2Tokenizer() = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Gpt2Tokenizer::Load(const std::string& dir) {
  const std::string encoder_path = dir + "/encoder.json";
  const std::string merges_path = dir + "/vocab.bpe";
  absl::StatusOr<std::string> encoder_text = ReadFile(encoder_path);
  if (!encoder_text.ok()) return encoder_text.status();
  absl::StatusOr<std::string> merges_text = ReadFile(merges_path);
  if (!merges_text.ok()) return merges_text.status();

  auto tokenizer = absl::WrapUnique(new Gpt2Tokenizer);

  // encoder.json: {vocabulary string: id}, ids 0..n-1 each once.
  const nlohmann::json encoder =
      nlohmann::json::parse(*encoder_text, nullptr, /*allow_exceptions=*/false);
  if (!encoder.is_object()) return Malformed(encoder_path, "not a JSON object");
  std::vector<std::string>& id_to_bytes = tokenizer->id_to_bytes_;
  id_to_bytes.resize(encoder.size());
  std::vector<bool> seen(encoder.size());
  std::unordered_map<std::string, int> bytes_to_id;
  std::string bytes;
  for (const auto& [key, value] : encoder.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= static_cast<int64_t>(encoder.size()) || seen[value.get<int>()]) {
      return Malformed(encoder_path,
                       absl::StrCat("ids are not 0..n-1 each once (at \"", key, "\")"));
    }
    if (!VocabStringToBytes(key, &bytes)) {
      return Malformed(encoder_path, absl::StrCat("bad token \"", key, "\""));
    }
    const int id = value.get<int>();
    seen[id] = true;
    id_to_bytes[id] = bytes;
    bytes_to_id.emplace(bytes, id);
    tokenizer->max_token_bytes_ =
        std::max<int64_t>(tokenizer->max_token_bytes_, static_cast<int64_t>(bytes.size()));
  }
  if (id_to_bytes.size() <= kEndOfText || id_to_bytes[kEndOfText] != kEndOfTextText) {
    return Malformed(encoder_path, absl::StrCat("id ", kEndOfText, " is not ", kEndOfTextText));
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = bytes_to_id.find(std::string(1, static_cast<char>(b)));
    if (it == bytes_to_id.end()) {
      return Malformed(encoder_path, absl::StrCat("no token for byte ", b));
    }
    tokenizer->byte_to_id_[b] = it->second;
  }

  // vocab.bpe: "#version" line, then one merge "left right" per line, in rank
  // order.
  int rank = 0, line_number = 0;
  std::string left, right;
  for (absl::string_view line : absl::StrSplit(*merges_text, '\n')) {
    ++line_number;
    if (line.empty() || absl::StartsWith(line, "#version")) continue;
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || !VocabStringToBytes(parts[0], &left) ||
        !VocabStringToBytes(parts[1], &right)) {
      return Malformed(merges_path, absl::StrCat("bad line ", line_number));
    }
    const auto left_id = bytes_to_id.find(left);
    const auto right_id = bytes_to_id.find(right);
    const auto result_id = bytes_to_id.find(left + right);
    if (left_id == bytes_to_id.end() || right_id == bytes_to_id.end() ||
        result_id == bytes_to_id.end()) {
      return Malformed(merges_path,
                       absl::StrCat("line ", line_number, " uses a token not in encoder.json"));
    }
    tokenizer->merges_.emplace(PairKey(left_id->second, right_id->second),
                               Merge{rank++, result_id->second});
  }

  absl::StatusOr<std::unique_ptr<Pretokenizer>> pretokenizer = Pretokenizer::Create();
  if (!pretokenizer.ok()) return pretokenizer.status();
  tokenizer->pretokenizer_ = *std::move(pretokenizer);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Gpt2Tokenizer::LoadDefault() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("NANOSERVE_VOCAB_DIR"); env && *env) {
    dirs.push_back(env);
  }
  dirs.push_back("./data/gpt2");
  char exe[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", exe, sizeof(exe));
  if (length > 0 && length < static_cast<ssize_t>(sizeof(exe))) {
    const absl::string_view exe_path(exe, length);
    dirs.push_back(absl::StrCat(exe_path.substr(0, exe_path.rfind('/')), "/../../data/gpt2"));
  }
#ifdef NANOSERVE_SOURCE_DIR
  dirs.push_back(absl::StrCat(NANOSERVE_SOURCE_DIR, "/data/gpt2"));
#endif
  for (const std::string& dir : dirs) {
    if (access((dir + "/encoder.json").c_str(), R_OK) == 0) return Load(dir);
  }
  return absl::NotFoundError(absl::StrCat(
      "GPT-2 vocabulary (encoder.json, vocab.bpe) not found in any of: ", absl::StrJoin(dirs, ", "),
      "; run scripts/setup.sh to fetch it"));
}

void Gpt2Tokenizer::AppendPieceTokens(absl::string_view piece, std::vector<int>* ids) const {
  std::vector<int> parts;
  parts.reserve(piece.size());
  for (const unsigned char byte : piece) parts.push_back(byte_to_id_[byte]);
  // The reference BPE: find the adjacent pair of lowest rank, merge all its
  // occurrences left to right, repeat until no pair has a merge.
  while (parts.size() > 1) {
    const Merge* best = nullptr;
    int best_left = 0, best_right = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const auto it = merges_.find(PairKey(parts[i], parts[i + 1]));
      if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        best_left = parts[i];
        best_right = parts[i + 1];
      }
    }
    if (best == nullptr) break;
    size_t out = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i + 1 < parts.size() && parts[i] == best_left && parts[i + 1] == best_right) {
        parts[out++] = best->result;
        ++i;
      } else {
        parts[out++] = parts[i];
      }
    }
    parts.resize(out);
  }
  ids->insert(ids->end(), parts.begin(), parts.end());
}

void Gpt2Tokenizer::AppendOrdinary(absl::string_view text, std::vector<int>* ids) const {
  pretokenizer_->Split(text, [&](absl::string_view piece) { AppendPieceTokens(piece, ids); });
}

std::vector<int> Gpt2Tokenizer::EncodeOrdinary(absl::string_view text) const {
  std::vector<int> ids;
  AppendOrdinary(text, &ids);
  return ids;
}

std::vector<int> Gpt2Tokenizer::Encode(absl::string_view text) const {
  std::vector<int> ids;
  bool first = true;
  for (absl::string_view chunk : absl::StrSplit(text, kEndOfTextText)) {
    if (!first) ids.push_back(kEndOfText);
    first = false;
    AppendOrdinary(chunk, &ids);
  }
  return ids;
}

absl::StatusOr<std::string> Gpt2Tokenizer::Decode(absl::Span<const int> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!IsValidId(ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                     " is outside [0, ", vocab_size(), ")"));
    }
    text += id_to_bytes_[ids[i]];
  }
  return text;
}

bool Gpt2Tokenizer::IsValidId(int id) const { return id >= 0 && id < vocab_size(); }

int Gpt2Tokenizer::vocab_size() const { return static_cast<int>(id_to_bytes_.size()); }

int64_t Gpt2Tokenizer::max_token_bytes() const { return max_token_bytes_; }

StreamingDecoder::StreamingDecoder(const Gpt2Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

absl::StatusOr<std::string> StreamingDecoder::Push(int id) {
  absl::StatusOr<std::string> bytes = tokenizer_.Decode(absl::MakeConstSpan(&id, 1));
  if (!bytes.ok()) return bytes.status();
  pending_ += *bytes;
  std::string text;
  size_t done = 0;
  while (done < pending_.size()) {
    const int n = Utf8Prefix(absl::string_view(pending_).substr(done));
    if (n == 0) break;  // unfinished character: hold it back
    if (n > 0) {
      text.append(pending_, done, n);
    } else {
      text += kReplacementChar;
    }
    done += n > 0 ? n : -n;
  }
  pending_.erase(0, done);
  return text;
}

std::string StreamingDecoder::Flush() {
  // What is held back is the unfinished start of a single character.
  std::string text = pending_.empty() ? "" : kReplacementChar;
  pending_.clear();
  return text;
}

}  // namespace nanoserve
