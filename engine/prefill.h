// Prompt prefill into KV cache rows: plain (Part B) and with prefix reuse
// from a PrefixStore (Part C).
#ifndef NANOSERVE_ENGINE_PREFILL_H_
#define NANOSERVE_ENGINE_PREFILL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/decode_step.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "kv_cache/prefix_store.h"

namespace nanoserve {

// Runs prompt[cache.length(row):] through the model into cache row `row`,
// `chunk` tokens per pass (0 = all at once), positions continuing from the
// row's length. Returns the last position's logits, (1, V) fp32.
// REQUIRES: cache.length(row) < prompt.size().
torch::Tensor PrefillRow(const Gpt2Model& model, KvCache& cache, int64_t row,
                         const std::vector<int>& prompt, int64_t chunk);

// Prefills every row row_begin + r of `cache` with what prompts[r] has
// beyond the row's current length (its cached prefix, possibly empty).
// Consecutive rows with as many tokens left run together in one forward pass
// per chunk (at most kMaxPrefillBatchTokens tokens a pass), each at its own
// positions. Returns each row's last-position logits, (1, V) fp32.
// REQUIRES: row_begin + prompts.size() <= cache.batch();
// cache.length(row_begin + r) < prompts[r].size().
std::vector<torch::Tensor> PrefillBatch(const Gpt2Model& model, KvCache& cache,
                                        const std::vector<std::vector<int>>& prompts, int64_t chunk,
                                        int64_t row_begin = 0);
inline constexpr int64_t kMaxPrefillBatchTokens = 16384;

// As PrefillBatch(model, cache, prompts, chunk, row_begin), through
// step->Prefill where a step over `cache` is given (on a GPU: CUDA graphs),
// else PrefillBatch itself.
std::vector<torch::Tensor> PrefillWith(DecodeStep* step, const Gpt2Model& model, KvCache& cache,
                                       const std::vector<std::vector<int>>& prompts, int64_t chunk,
                                       int64_t row_begin = 0);

// What PrefixPrefill::Run did, per prompt and for the batch.
struct PrefixPrefillResult {
  std::vector<torch::Tensor> logits;        // per prompt: last position's, (1, V) fp32
  std::vector<int64_t> reused_tokens;       // per prompt: loaded from the store
  std::vector<PrefixStore::Stored> stored;  // per prompt: what the store now holds
  int64_t computed_tokens = 0;              // prompt tokens run through the model
  // OK, or why the store could not be used (unreachable, another layout,
  // ...): from that call on, the batch was computed without it.
  absl::Status store_status;
  double store_ms = 0;  // time spent in store calls
  // Whether the store was asked for matches (the batch had enough to reuse:
  // PrefixPrefill's min_match_tokens), and how long the suffixes' match
  // call took (in store_ms too).
  bool store_asked = false;
  double match_ms = 0;
  // Rows whose prefix came out of a remote store's pool by its page index,
  // without a match (PrefixStore::LoadUnleasedRows).
  int64_t unleased_rows = 0;
  // Whether the suffixes' match was called (asked, and some row the index
  // did not serve): match_ms then times it.
  bool match_called = false;
};

// Prefills a batch with prefix reuse (Part C) from a PrefixStore (in this
// process or remote), in two phases:
//  1. Shared prefixes, parents before children. In lexicographic order (a
//     depth-first walk of the batch's radix tree) each prompt's longest
//     prefix shared with a neighbour, page aligned and at most len - 1
//     tokens, is a branch point of the tree. Branch points are computed in
//     order of length, each once, starting from what the store already
//     holds, and stored.
//  2. Suffixes. Every prompt takes its longest cached prefix P (at most
//     len - 1 tokens, so the last token always runs and yields logits)
//     into its row: without a lease where the store's page index serves it
//     (PrefixStore::LoadUnleasedRows), else matched (one call for the batch)
//     and loaded; the suffixes run batched (PrefillBatch) at positions
//     P..len-1 with rectangular causal masks. Each prompt's whole pages go
//     into the store.
// So a prefix shared by several prompts of a batch is computed once. Each
// prompt may name a cache namespace (cache salt, kv_store/prefix_cache.h):
// its prefixes are matched and stored under that salt only, and prompts of
// different salts share nothing, not even within the batch. A store
// with no room simply does not store a prompt (its own generation is
// unaffected); a store that fails is left alone for the rest of the batch,
// which is computed without it (result.store_status says why).
class PrefixPrefill {
 public:
  // Nothing is owned. With `step` (over the cache Run is given), the branch
  // points and the suffixes run through it (PrefillWith: on a GPU, one CUDA
  // graph a pass).
  // A batch whose prompts could reuse fewer than `min_match_tokens` tokens
  // all told asks the store for no match: computing them costs less than
  // the round trip (PrefillStageOptions::store_match_min_tokens measures
  // it). What a prompt could reuse: its whole pages of its first len - 1
  // tokens, or where the store's page index tells (CachedTokensHint) and
  // no two prompts of the batch share a page, the part of them the store
  // holds; so with an index a batch of prompts the store has nothing of
  // goes straight to the forward pass. Its pages are still stored. A
  // batch with nothing to match (no prompt longer than a page) never asks.
  PrefixPrefill(const Gpt2Model& model, PrefixStore& store, int64_t chunk,
                DecodeStep* step = nullptr, int64_t min_match_tokens = 0)
      : model_(model),
        store_(store),
        chunk_(chunk),
        step_(step),
        min_match_tokens_(min_match_tokens) {}

  // Fills rows 0..prompts.size()-1 of `cache`. `cache_salts` holds each
  // prompt's namespace, or is empty (all in the shared default). With
  // keep_leases, the leases in result.stored are the caller's to release,
  // and `lease_holder` (PrefixStore::Store) may use them too; without, they
  // are released before Run returns (stored_tokens still say what was
  // stored). Every other lease is released before Run returns, whatever
  // happens.
  // Errors: INVALID_ARGUMENT for an empty batch or prompt, more prompts
  // than rows, or cache_salts of another size than prompts;
  // RESOURCE_EXHAUSTED / INTERNAL from LibTorch (RunTorch).
  // `on_logits`, if set, sees each prompt's last-position logits as soon as
  // the forward pass has made them, before the pages are stored (a caller
  // may choose and send the first tokens meanwhile: the store's calls are
  // then off its time to first token); a LibTorch error it throws ends Run
  // as one of Run's own.
  // REQUIRES: every prompt fits the cache's capacity; token ids are valid.
  using LogitsReady = std::function<void(const std::vector<torch::Tensor>& logits)>;
  absl::StatusOr<PrefixPrefillResult> Run(const std::vector<std::vector<int>>& prompts,
                                          KvCache& cache, bool keep_leases = false,
                                          absl::Span<const std::string> cache_salts = {},
                                          absl::string_view lease_holder = "",
                                          const LogitsReady& on_logits = nullptr);

 private:
  // One Run's prompts with their namespaces.
  struct Batch {
    const std::vector<std::vector<int>>& prompts;
    absl::Span<const std::string> cache_salts;  // empty: all ""
    absl::string_view salt(size_t i) const {
      return cache_salts.empty() ? absl::string_view() : absl::string_view(cache_salts[i]);
    }
  };

  // Runs `call` (a store call), adds its time to result.store_ms, and
  // records the first failure in result.store_status.
  template <typename F>
  auto StoreCall(PrefixPrefillResult& result, F&& call);
  absl::StatusOr<PrefixPrefillResult> RunBatch(const Batch& batch, KvCache& cache, bool keep_leases,
                                               absl::string_view lease_holder,
                                               const LogitsReady& on_logits);
  // The store's page size, or 0 (and result.store_status) if it cannot be
  // used with this model.
  int64_t UsablePageSize(PrefixPrefillResult& result);
  // Phase 1. False if the store failed.
  bool ComputeBranchPoints(const Batch& batch, int64_t page_size, KvCache& cache,
                           PrefixPrefillResult& result);
  // Phase 2's loads: each row from its longest cached prefix (at most
  // len - 1 tokens), whose leases land in `loads` (the caller releases
  // them). Rows not over the store's own pool load a prefix once per batch
  // and copy it into the other rows that share it. Without `ask`, every
  // row starts empty and the store is asked nothing. False if the store
  // failed (rows are then empty).
  bool LoadPrefixes(const Batch& batch, int64_t page_size, bool ask, KvCache& cache,
                    PrefixPrefillResult& result, std::vector<PrefixStore::LeasedRow>& loads);

  const Gpt2Model& model_;
  PrefixStore& store_;
  int64_t chunk_;
  DecodeStep* step_;
  int64_t min_match_tokens_;

  // The batch's prompts in order of (namespace, tokens): a depth-first walk
  // of its radix tree, where neighbours share the longest prefixes.
  static std::vector<size_t> LexicographicOrder(const Batch& batch);
  // What a match could reuse for `batch` (the constructor's comment).
  int64_t ReusableTokens(const Batch& batch, int64_t page_size);
};

// A batch prefilled and its first tokens sampled (PrefillAndSample).
struct SampledPrefill {
  // Per prompt, as PrefixPrefillResult says. Without a store: reused_tokens
  // are 0, stored is empty of leases, store_status is OK.
  PrefixPrefillResult prefill;
  std::vector<int> first_tokens;  // per prompt
};

// Prefill and first-token sampling of a batch: the engine's entry point for
// a prefill stage, with LibTorch's errors as statuses. The rows live over
// the store's own pool where it has one in this process (prefix hits read
// in place), else over a pool of their own. With a store the batch runs as
// PrefixPrefill::Run with keep_leases (the leases in prefill.stored are the
// caller's to release, and options.lease_holder may use them); without one
// (store == nullptr) as PrefillBatch, and nothing is stored. Prompt i's
// first token is drawn with a Sampler of sampling[i].
// Errors: PrefixPrefill::Run's; INVALID_ARGUMENT if sampling has another
// size than prompts; INTERNAL if a prompt's last logits are not finite;
// RESOURCE_EXHAUSTED / INTERNAL from LibTorch. No lease is left held then.
// REQUIRES: prompts are non-empty and of valid token ids; each sampling
// option is valid (ValidateSamplingOptions).
using FirstTokensReady = std::function<void(absl::Span<const int> first_tokens)>;
class KeptPrefillRows;
struct PrefillAndSampleOptions {
  int64_t chunk = 0;  // prompt tokens per forward pass; 0 = all at once
  // Each prompt's namespace (PrefixPrefill::Run), or empty: all in "".
  absl::Span<const std::string> cache_salts;
  absl::string_view lease_holder;  // PrefixPrefill::Run's
  // If set, gets the first tokens as soon as they are drawn: after the
  // forward pass, before the pages are stored (PrefixPrefill::Run's
  // on_logits), so a caller may send them while the store's calls run.
  FirstTokensReady on_first;
  // If set, rows the caller keeps from one batch to the next
  // (KeptPrefillRows), used instead of rows of the batch's own where the
  // batch fits them.
  KeptPrefillRows* kept = nullptr;
  // PrefixPrefill's: a batch that could reuse fewer tokens asks the store
  // for no match.
  int64_t min_match_tokens = 0;
};
absl::StatusOr<SampledPrefill> PrefillAndSample(const Gpt2Model& model, PrefixStore* store,
                                                const std::vector<std::vector<int>>& prompts,
                                                absl::Span<const SamplingOptions> sampling,
                                                const PrefillAndSampleOptions& options = {});

// Rows a prefill stage keeps from one batch to the next, over a pool of
// their own, with the step that runs them: on a GPU the cuda-graph step,
// whose prefill graphs are then captured once (Prepare) and replayed for
// every batch, where rows made per batch would need graphs per batch.
// PrefillAndSample uses them for a batch of at most rows() prompts whose
// pages fit the pool, without a store or with one whose pool is elsewhere
// (a store in this process has rows over its own pool); other batches get
// rows of their own. Not thread safe: one batch at a time.
class KeptPrefillRows {
 public:
  // `rows` rows of up to the model's n_positions tokens over a pool of
  // `pool_tokens` tokens, and the step `kind` over them. Errors:
  // KvCache::Create's and MakeDecodeStep's.
  static absl::StatusOr<std::unique_ptr<KeptPrefillRows>> Create(
      const Gpt2Model* model, int64_t rows, int64_t pool_tokens,
      DecodeKind kind = DecodeKind::kAuto);

  KvCache& cache() { return *cache_; }
  DecodeStep& step() { return *step_; }
  int64_t rows() const { return cache_->batch(); }
  // The step's one-time work (DecodeStep::Prepare: on a GPU, every prefill
  // graph captured), LibTorch's errors as a status.
  absl::Status Prepare();
  // Whether `prompts` (each within n_positions) fit: as many rows, and
  // their pages the pool.
  bool Fits(const std::vector<std::vector<int>>& prompts) const;

 private:
  KeptPrefillRows(std::unique_ptr<KvCache> cache, std::unique_ptr<DecodeStep> step)
      : cache_(std::move(cache)), step_(std::move(step)) {}

  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<DecodeStep> step_;  // over cache_
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_PREFILL_H_
