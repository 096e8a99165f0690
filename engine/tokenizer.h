// GPT-2's byte-level BPE tokenizer, identical to tiktoken's "gpt2" encoding,
// and a decoder that turns a stream of ids into complete UTF-8 text.
#ifndef NANOSERVE_ENGINE_TOKENIZER_H_
#define NANOSERVE_ENGINE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

// Turns text into GPT-2 token ids and back. Text is any byte string: Encode
// splits it with GPT-2's pre-tokenizer regex and applies vocab.bpe's merges to
// each piece; bytes that are not valid UTF-8 become single-byte tokens. For
// every byte string s, Decode(Encode(s)) == s and Decode(EncodeOrdinary(s)) ==
// s.
//
// Thread safety: immutable after Load; all methods are const and may be called
// from any number of threads at once.
class Gpt2Tokenizer {
 public:
  static constexpr int kEndOfText = 50256;  // "<|endoftext|>"

  // Loads encoder.json and vocab.bpe from dir. NOT_FOUND if a file cannot be
  // read, INVALID_ARGUMENT if one is malformed; the message names the file.
  static absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Load(const std::string& dir);

  // Loads from the first of these directories that holds encoder.json:
  // $NANOSERVE_VOCAB_DIR, ./data/gpt2, <dir of the executable>/../../data/gpt2,
  // and <source dir>/data/gpt2 when built with NANOSERVE_SOURCE_DIR. NOT_FOUND,
  // naming every place looked, if none does.
  static absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> LoadDefault();

  ~Gpt2Tokenizer();
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  // tiktoken's encode_ordinary: "<|endoftext|>" in text is ordinary text, so
  // the result never contains kEndOfText.
  std::vector<int> EncodeOrdinary(absl::string_view text) const;

  // tiktoken's encode(allowed_special="all"): each literal "<|endoftext|>"
  // becomes kEndOfText; the text between them is encoded as EncodeOrdinary.
  std::vector<int> Encode(absl::string_view text) const;

  // The bytes the ids stand for, concatenated; may be invalid UTF-8 (a
  // character can be split across tokens). kEndOfText decodes to
  // "<|endoftext|>". INVALID_ARGUMENT naming the first id that is not valid.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const;

  // True iff 0 <= id < vocab_size().
  bool IsValidId(int id) const;
  int vocab_size() const;  // 50257 for GPT-2
  // The most bytes one token stands for (128 for GPT-2): a text of more
  // than n * max_token_bytes() bytes encodes to more than n tokens.
  int64_t max_token_bytes() const;

 private:
  class Pretokenizer;  // GPT-2's regex, compiled with PCRE2
  struct Merge {
    int rank;    // line of vocab.bpe, 0 first: lower ranks merge first
    int result;  // id of the merged token
  };

  Gpt2Tokenizer();

  // Appends the BPE tokens of one pre-tokenized piece to ids.
  void AppendPieceTokens(absl::string_view piece, std::vector<int>* ids) const;
  void AppendOrdinary(absl::string_view text, std::vector<int>* ids) const;

  std::vector<std::string> id_to_bytes_;  // token id -> its bytes
  int64_t max_token_bytes_ = 1;           // the longest of them
  int byte_to_id_[256];                   // byte -> its single-byte token
  // (left id << 32 | right id) -> the merge of that adjacent pair.
  std::unordered_map<uint64_t, Merge> merges_;
  std::unique_ptr<Pretokenizer> pretokenizer_;
};

// Decodes ids one at a time for streaming text out: each Push returns the text
// that has become complete UTF-8. Bytes of a character whose remaining bytes
// may still arrive are held back; bytes that can never form valid UTF-8 are
// replaced by U+FFFD, one per maximal invalid subpart (as Python's
// bytes.decode(errors="replace")). So the concatenation of all Push results
// and Flush() is always valid UTF-8, and equals Decode(ids) whenever that is
// valid UTF-8.
//
// Thread safety: not thread-safe; use one decoder per stream. The tokenizer
// must outlive the decoder.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Gpt2Tokenizer& tokenizer);

  // Adds one id and returns the text completed by it (possibly empty).
  // INVALID_ARGUMENT, with the decoder unchanged, if the id is not valid.
  absl::StatusOr<std::string> Push(int id);

  // Returns the held-back bytes of an unfinished character as U+FFFD (empty if
  // none) and resets the decoder for a new stream.
  std::string Flush();

 private:
  const Gpt2Tokenizer& tokenizer_;
  std::string pending_;  // bytes of an unfinished character, at most 3
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_TOKENIZER_H_
