// Fuzzes the GPT-2 tokenizer (engine/tokenizer.h) with its own contracts:
//   - the input as text: Decode(Encode(s)) == s and Decode(EncodeOrdinary(s))
//     == s, and EncodeOrdinary never yields <|endoftext|>;
//   - the input as ids (little-endian uint16 pairs minus 8, so that negative,
//     valid and too-large ids all occur): Decode fails iff an id is invalid;
//     StreamingDecoder refuses exactly the invalid ids, leaves itself
//     unchanged when it does, writes valid UTF-8, and writes Decode's text
//     whenever that is valid UTF-8.
// Needs the vocabulary in data/gpt2 (scripts/fetch_vocab.sh).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace nanoserve {
namespace {

const Gpt2Tokenizer& Tokenizer() {
  static const Gpt2Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> loaded = Gpt2Tokenizer::LoadDefault();
    if (!loaded.ok()) {
      std::fprintf(stderr, "tokenizer_fuzzer: %s\n", loaded.status().ToString().c_str());
      std::exit(1);
    }
    return loaded->release();
  }();
  return *tokenizer;
}

// Strict UTF-8 (RFC 3629): no overlong forms, surrogates or code points
// past U+10FFFF.
bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    int n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (int k = 1; k <= n; ++k) {
      const unsigned char b = s[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += n + 1;
  }
  return true;
}

void CheckText(const Gpt2Tokenizer& tokenizer, absl::string_view text) {
  const std::vector<int> ids = tokenizer.Encode(text);
  absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
  FUZZ_CHECK(decoded.ok() && *decoded == text);

  const std::vector<int> ordinary = tokenizer.EncodeOrdinary(text);
  for (int id : ordinary) FUZZ_CHECK(id != Gpt2Tokenizer::kEndOfText);
  decoded = tokenizer.Decode(ordinary);
  FUZZ_CHECK(decoded.ok() && *decoded == text);
}

void CheckIds(const Gpt2Tokenizer& tokenizer, const uint8_t* data, size_t size) {
  std::vector<int> ids, valid;
  for (size_t i = 0; i + 1 < size; i += 2) {
    const int id = static_cast<int>(data[i] | data[i + 1] << 8) - 8;
    ids.push_back(id);
    if (tokenizer.IsValidId(id)) valid.push_back(id);
  }
  FUZZ_CHECK(tokenizer.Decode(ids).ok() == (ids.size() == valid.size()));

  StreamingDecoder decoder(tokenizer);
  std::string streamed;
  for (int id : ids) {
    absl::StatusOr<std::string> piece = decoder.Push(id);
    FUZZ_CHECK(piece.ok() == tokenizer.IsValidId(id));
    if (piece.ok()) streamed += *piece;
  }
  streamed += decoder.Flush();
  FUZZ_CHECK(IsValidUtf8(streamed));
  absl::StatusOr<std::string> whole = tokenizer.Decode(valid);
  FUZZ_CHECK(whole.ok());
  if (IsValidUtf8(*whole)) FUZZ_CHECK(streamed == *whole);
}

}  // namespace
}  // namespace nanoserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nanoserve::Gpt2Tokenizer& tokenizer = nanoserve::Tokenizer();
  nanoserve::CheckText(tokenizer, absl::string_view(reinterpret_cast<const char*>(data), size));
  nanoserve::CheckIds(tokenizer, data, size);
  return 0;
}
