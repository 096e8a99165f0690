#include "engine/batch_scheduler.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "engine/prefill.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/prompt_check.h"

namespace nanoserve {

BatchScheduler::BatchScheduler(const Gpt2Model* model, const BatchSchedulerOptions& options,
                               int64_t capacity, std::unique_ptr<KvCache> cache,
                               std::unique_ptr<DecodeStep> decode)
    : model_(model),
      options_(options),
      capacity_(capacity),
      cache_(std::move(cache)),
      pool_pages_(cache_->pool().num_pages() - 1),
      decode_(std::move(decode)),
      slots_(options.max_batch) {
  thread_ = std::thread([this] { Loop(); });
}

absl::StatusOr<std::unique_ptr<BatchScheduler>> BatchScheduler::Create(
    const Gpt2Model* model, const BatchSchedulerOptions& options) {
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch must be >= 1");
  if (options.page_size < 1) return absl::InvalidArgumentError("page_size must be >= 1");
  if (options.pool_tokens < 0) return absl::InvalidArgumentError("pool_tokens must be >= 0");
  const int64_t capacity = options.capacity > 0
                               ? std::min(options.capacity, model->config().n_positions)
                               : model->config().n_positions;
  absl::StatusOr<std::unique_ptr<KvCache>> cache =
      KvCache::Create(model->config(), options.max_batch, capacity, model->options().dtype,
                      model->options().device, options.page_size, options.pool_tokens);
  if (!cache.ok()) return cache.status();
  for (int64_t s = 0; s < options.max_batch; ++s) (*cache)->tables().Park(s);
  absl::StatusOr<std::unique_ptr<DecodeStep>> step =
      MakeDecodeStep(model, cache->get(), options.decode);
  if (!step.ok()) return step.status();
  return std::unique_ptr<BatchScheduler>(
      new BatchScheduler(model, options, capacity, *std::move(cache), *std::move(step)));
}

BatchScheduler::~BatchScheduler() { Shutdown(); }

void BatchScheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    wake_.notify_all();
  }
  std::lock_guard<std::mutex> lock(join_mu_);
  if (thread_.joinable()) thread_.join();
  callbacks_.Stop();  // every on_done has run
}

torch::Device BatchScheduler::device() const { return model_->options().device; }

absl::Status BatchScheduler::Validate(const BatchRequest& r) const {
  const Gpt2Config& config = model_->config();
  const int64_t n = static_cast<int64_t>(r.prompt.size());
  if (absl::Status s = ValidatePrompt(r.prompt, config.vocab_size, capacity_); !s.ok()) return s;
  if (absl::Status s = ValidateGenerationLength(n, r.max_new_tokens, capacity_); !s.ok()) {
    return s;
  }
  const int64_t pages = PageRun::PagesFor(n + r.max_new_tokens, cache_->page_size());
  if (pages > pool_pages_) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " prompt tokens + ", r.max_new_tokens, " new tokens need ", pages, " KV pages of ",
        cache_->page_size(), " tokens; the pool holds ", pool_pages_));
  }
  if (absl::Status s = ValidateSamplingOptions(r.sampling); !s.ok()) return s;
  if (r.first_token >= config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_token ", r.first_token, " outside the vocabulary"));
  }
  if (r.prompt_pages.defined() && r.prompt_pool.defined()) {
    return absl::InvalidArgumentError("both prompt_pages and prompt_pool");
  }
  int64_t page_tokens = 0;
  if (r.prompt_pages.defined()) {
    const torch::Tensor& p = r.prompt_pages;
    if (!PageRun::CheckStaged(p, cache_->layout(), n).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt pages of shape ", c10::str(p.sizes()),
                                                     " do not fit a ", n, "-token prompt"));
    }
    page_tokens = PageRun::StagedTokens(p);
  }
  if (r.prompt_pool.defined()) {
    const torch::Tensor& p = r.prompt_pool;
    const int64_t count = static_cast<int64_t>(r.prompt_pool_pages.size());
    if (p.dim() != 6 || !PageRun::CheckStaged(p.narrow(0, 0, 0), cache_->layout(), 0).ok() ||
        count * p.size(4) > n) {
      return absl::InvalidArgumentError(absl::StrCat(count, " prompt pages of a pool of shape ",
                                                     c10::str(p.sizes()), " do not fit a ", n,
                                                     "-token prompt"));
    }
    for (int32_t page : r.prompt_pool_pages) {
      if (page < 0 || page >= p.size(0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt page ", page, " outside the pool's [0, ", p.size(0), ")"));
      }
    }
    page_tokens = count * p.size(4);
  }
  if (page_tokens == n && r.first_token < 0) {
    return absl::InvalidArgumentError("prompt pages cover the whole prompt but no first_token");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> BatchScheduler::Submit(BatchRequest request) {
  std::vector<BatchRequest> one;
  one.push_back(std::move(request));
  absl::StatusOr<std::vector<uint64_t>> ids = SubmitBatch(std::move(one));
  if (!ids.ok()) return ids.status();
  return ids->front();
}

absl::StatusOr<std::vector<uint64_t>> BatchScheduler::SubmitBatch(
    std::vector<BatchRequest> requests) {
  std::vector<std::unique_ptr<Entry>> entries;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (absl::Status s = Validate(requests[i]); !s.ok()) {
      if (requests.size() == 1) return s;
      return absl::Status(s.code(), absl::StrCat("request ", i, ": ", s.message()));
    }
    auto entry = std::make_unique<Entry>();
    entry->sampler = std::make_unique<Sampler>(requests[i].sampling);
    entry->callbacks = std::make_shared<const Callbacks>(
        Callbacks{std::move(requests[i].on_token), std::move(requests[i].on_done)});
    entry->request = std::move(requests[i]);
    entry->submitted = absl::Now();
    entries.push_back(std::move(entry));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("the decode scheduler is shutting down");
  // Free slots take requests at the next step; beyond them, max_queue wait.
  const int64_t free_slots = std::max<int64_t>(options_.max_batch - active_.load(), 0);
  if (static_cast<int64_t>(waiting_.size() + entries.size()) > options_.max_queue + free_slots) {
    return absl::ResourceExhaustedError(
        absl::StrCat("decode queue full (", options_.max_queue, " requests waiting)"));
  }
  std::vector<uint64_t> ids;
  for (auto& entry : entries) {
    entry->id = next_id_++;
    ids.push_back(entry->id);
    waiting_.push_back(std::move(entry));
  }
  queued_.store(static_cast<int64_t>(waiting_.size()));
  wake_.notify_all();
  return ids;
}

void BatchScheduler::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_.insert(id);
  wake_.notify_all();
}

void BatchScheduler::End(Entry& entry, const absl::Status& status) {
  if (!entry.callbacks->on_done) return;
  turn_callbacks_.push_back([callbacks = entry.callbacks, status, result = entry.result] {
    callbacks->on_done(status, result);
  });
}

void BatchScheduler::HandleCancels(absl::flat_hash_set<uint64_t> ids) {
  for (int64_t slot = 0; slot < static_cast<int64_t>(slots_.size()); ++slot) {
    if (slots_[slot] != nullptr && ids.contains(slots_[slot]->id)) {
      Finish(slot, absl::CancelledError("cancelled"));
    }
  }
}

absl::Duration BatchScheduler::busy_for(absl::Time now) const {
  const int64_t began = turn_began_ns_.load();
  const absl::Duration turn =
      began == 0 ? absl::ZeroDuration()
                 : std::max(now - absl::FromUnixNanos(began), absl::ZeroDuration());
  return std::max(turn, callbacks_.busy_for(now));
}

void BatchScheduler::Loop() {
  // Captures the decode step's graphs before any request waits on them. A
  // failure here leaves the step to capture (or fail) at its first use.
  const absl::Status prepared = RunTorch("preparing the decode step", [&] { decode_->Prepare(); });
  (void)prepared;
  auto ms_since = [](absl::Time* mark) {
    const absl::Time now = absl::Now();
    const double ms = absl::ToDoubleMilliseconds(now - *mark);
    *mark = now;
    return ms;
  };
  for (;;) {
    TurnTimes turn;
    std::vector<std::unique_ptr<Entry>> admitted, cancelled_waiting;
    absl::flat_hash_set<uint64_t> cancels;
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      turn_began_ns_.store(0);
      wake_.wait(lock, [&] {
        return stop_ || !cancelled_.empty() || active_.load() > 0 || (!waiting_.empty());
      });
      turn.began = absl::Now();
      turn_began_ns_.store(absl::ToUnixNanos(turn.began));
      turn_prompt_tokens_ = 0;
      turn_drew_first_ = false;
      stop = stop_;
      cancels.swap(cancelled_);
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (stop || cancels.contains((*it)->id)) {
          cancelled_waiting.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
      int64_t free_slots = 0;
      for (const auto& s : slots_) free_slots += s == nullptr ? 1 : 0;
      while (!stop && free_slots > 0 && !waiting_.empty()) {
        admitted.push_back(TakeNextLocked());
        --free_slots;
      }
      queued_.store(static_cast<int64_t>(waiting_.size()));
    }
    const absl::Status ended = stop
                                   ? absl::UnavailableError("the decode scheduler is shutting down")
                                   : absl::CancelledError("cancelled");
    for (auto& e : cancelled_waiting) End(*e, ended);
    if (stop) {
      for (int64_t slot = 0; slot < static_cast<int64_t>(slots_.size()); ++slot) {
        if (slots_[slot] != nullptr) Finish(slot, ended);
      }
      callbacks_.Post(std::move(turn_callbacks_));
      return;
    }
    HandleCancels(std::move(cancels));
    absl::Time mark = absl::Now();
    turn.admitted = static_cast<int64_t>(admitted.size());
    if (!admitted.empty()) {
      std::vector<std::unique_ptr<Entry>> later = AdmitAll(std::move(admitted));
      if (!later.empty()) {  // no pages yet: first in line for the next turn
        std::lock_guard<std::mutex> lock(mu_);
        for (auto it = later.rbegin(); it != later.rend(); ++it) {
          (*it)->page_bound = true;
          waiting_.push_front(std::move(*it));
        }
        queued_.store(static_cast<int64_t>(waiting_.size()));
      }
    }
    turn.admit_ms = ms_since(&mark);
    if (!turn_callbacks_.empty() && turn_drew_first_) {
      // First tokens drawn for the requests just admitted: streamed now, not
      // after this turn's step (at the cost of waiting for the last turn's
      // callbacks). A first token the request gave (prefill's, which the
      // decode service streamed already) goes with the step's tokens: the
      // step need not wait for anyone.
      callbacks_.Post(std::move(turn_callbacks_));
      turn_callbacks_.clear();
    }
    turn.wait_ms = ms_since(&mark);
    if (active_.load() > 0) {
      turn.rows = active_.load();
      turn.step_model_ms = Step();
      turn.step_ms = ms_since(&mark);
      AdvancePrefill();
      turn.prefill_ms = ms_since(&mark);
    }
    // The turn's tokens to their streams while the next turn steps.
    callbacks_.Post(std::move(turn_callbacks_));
    turn_callbacks_.clear();
    turn.post_ms = ms_since(&mark);
    turn.prompt_tokens = turn_prompt_tokens_;
    NoteTurn(turn);
  }
}

void BatchScheduler::NoteTurn(const TurnTimes& turn) {
  if (options_.slow_turn_ms <= 0) return;
  const absl::Time now = absl::Now();
  const double total = absl::ToDoubleMilliseconds(now - turn.began);
  if (total < static_cast<double>(options_.slow_turn_ms)) return;
  slow_turns_.fetch_add(1);
  int64_t skipped = 0;
  if (!slow_log_rate_.Allow(now, &skipped)) return;
  const std::string unlogged =
      skipped > 0 ? absl::StrCat(" (", skipped, " slow turns before not logged)") : "";
  std::fprintf(stderr,
               "decode scheduler: a turn at %s of %.1f ms (over %lld): %lld admitted in %.1f ms "
               "(%lld "
               "prompt tokens computed in the turn), "
               "waiting for the turn before's callbacks %.1f ms, the step of %lld rows %.1f ms "
               "(the model and sampling %.1f), prefill %.1f ms, posting the callbacks %.1f ms%s\n",
               absl::FormatTime("%H:%M:%E3S", turn.began, absl::UTCTimeZone()).c_str(), total,
               static_cast<long long>(options_.slow_turn_ms), static_cast<long long>(turn.admitted),
               turn.admit_ms, static_cast<long long>(turn.prompt_tokens), turn.wait_ms,
               static_cast<long long>(turn.rows), turn.step_ms, turn.step_model_ms, turn.prefill_ms,
               turn.post_ms, unlogged.c_str());
}

std::unique_ptr<BatchScheduler::Entry> BatchScheduler::TakeNextLocked() {
  auto next = waiting_.begin();
  if (!(*next)->page_bound) {
    // The first entry (the oldest) of the smallest caller after last_caller_,
    // else of the smallest caller.
    auto after = waiting_.end();
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      const std::string& caller = (*it)->request.caller;
      if (caller < (*next)->request.caller) next = it;
      if (caller > last_caller_ && (after == waiting_.end() || caller < (*after)->request.caller)) {
        after = it;
      }
    }
    if (after != waiting_.end()) next = after;
  }
  std::unique_ptr<Entry> entry = std::move(*next);
  waiting_.erase(next);
  last_caller_ = entry->request.caller;
  return entry;
}

std::vector<std::unique_ptr<BatchScheduler::Entry>> BatchScheduler::AdmitAll(
    std::vector<std::unique_ptr<Entry>> entries) {
  // Lowest free slots, in arrival order; each reserves the pages of its
  // whole sequence and gets its given K/V.
  std::vector<int64_t> taken;  // slots whose prompt still needs computing
  std::vector<std::unique_ptr<Entry>> later;
  for (auto& entry : entries) {
    if (!later.empty()) {  // arrival order: none overtakes one that waits
      later.push_back(std::move(entry));
      continue;
    }
    int64_t slot = 0;
    while (slots_[slot] != nullptr) ++slot;
    Entry& e = *entry;
    const BatchRequest& r = e.request;
    const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
    cache_->Reset(slot);
    const absl::Status reserved = cache_->tables().PrepareWrite(slot, 0, total);
    if (!reserved.ok()) {
      cache_->tables().Park(slot);
      if (reserved.code() == absl::StatusCode::kResourceExhausted && active_.load() > 0) {
        later.push_back(std::move(entry));  // pages free up as others finish
        continue;
      }
      End(e, reserved);
      continue;
    }
    e.result.queue_ms = absl::ToDoubleMilliseconds(absl::Now() - e.submitted);
    slots_[slot] = std::move(entry);
    active_.fetch_add(1);
    const absl::Time loading = absl::Now();
    const absl::Status loaded = LoadPromptPages(slot, e.request);
    e.result.prompt_pages_ms = absl::ToDoubleMilliseconds(absl::Now() - loading);
    if (!loaded.ok()) {
      Finish(slot, loaded);
    } else if (cache_->length(slot) < static_cast<int64_t>(r.prompt.size())) {
      // Chunked: computed within each loop turn's token budget by
      // AdvancePrefill, between decode steps; else all at once below.
      e.prefilling = options_.prefill_chunk > 0;
      if (!e.prefilling) taken.push_back(slot);
    } else {
      e.last_token = r.first_token;
      Emit(slot, e.last_token);
    }
  }
  std::sort(taken.begin(), taken.end());
  PrefillRuns(taken, std::vector<int64_t>(taken.size(), 0));
  return later;
}

absl::Status BatchScheduler::LoadPromptPages(int64_t slot, BatchRequest& r) {
  absl::Cleanup drop = [&r] {  // a mapped pool stays mapped while held
    r.prompt_pages = torch::Tensor();
    r.prompt_pool = torch::Tensor();
    r.prompt_pool_pages.clear();
  };
  if (r.prompt_pool.defined() && !r.prompt_pool_pages.empty() &&
      r.prompt_pool.size(4) == cache_->page_size()) {
    return cache_->tables().CopyPagesIn(slot, r.prompt_pool, r.prompt_pool_pages);
  }
  return TorchResult("loading prompt pages", [&] {
    torch::Tensor staged = r.prompt_pages;
    if (r.prompt_pool.defined() && !r.prompt_pool_pages.empty()) {
      absl::StatusOr<torch::Tensor> read =
          ReadPages(r.prompt_pool, r.prompt_pool_pages, cache_->tables().storage().device());
      if (!read.ok()) return read.status();
      staged = *std::move(read);
    }
    if (!staged.defined() || staged.size(0) == 0) return absl::OkStatus();
    const torch::Tensor kv = PagesAsTokens(staged);  // any page size
    absl::Status written = cache_->WriteTokens(slot, 0, kv);
    if (written.ok()) cache_->set_length(slot, kv.size(3));
    return written;
  });
}

void BatchScheduler::AdvancePrefill() {
  std::vector<int64_t> rows;
  for (int64_t s = 0; s < static_cast<int64_t>(slots_.size()); ++s) {
    if (slots_[s] != nullptr && slots_[s]->prefilling) rows.push_back(s);
  }
  std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) {
    return slots_[a]->id < slots_[b]->id;  // ids grow with Submit: oldest first
  });
  std::vector<std::pair<int64_t, int64_t>> given;  // (slot, tokens this turn)
  int64_t left = options_.prefill_chunk;
  for (int64_t s : rows) {
    if (left <= 0) break;
    const int64_t rest = static_cast<int64_t>(slots_[s]->request.prompt.size()) - cache_->length(s);
    const int64_t take = std::min(rest, left);
    if (take <= 0) continue;
    given.emplace_back(s, take);
    left -= take;
  }
  std::sort(given.begin(), given.end());  // by slot: PrefillRuns batches consecutive slots
  std::vector<int64_t> chosen, budgets;
  for (const auto& [slot, tokens] : given) {
    chosen.push_back(slot);
    budgets.push_back(tokens);
  }
  PrefillRuns(chosen, budgets);
}

void BatchScheduler::PrefillRuns(const std::vector<int64_t>& slots,
                                 const std::vector<int64_t>& budgets) {
  for (size_t begin = 0; begin < slots.size();) {
    size_t end = begin + 1;
    while (end < slots.size() && slots[end] == slots[end - 1] + 1) ++end;
    std::vector<int64_t> run(slots.begin() + begin, slots.begin() + end);
    std::vector<int64_t> run_budgets(budgets.begin() + begin, budgets.begin() + end);
    if (!PrefillSlots(run, run_budgets) && run.size() > 1) {
      // A failed batch is retried row by row, so that only the row that
      // cannot be computed fails.
      for (size_t i = 0; i < run.size(); ++i) PrefillSlots({run[i]}, {run_budgets[i]});
    }
    begin = end;
  }
}

bool BatchScheduler::PrefillSlots(const std::vector<int64_t>& slots,
                                  const std::vector<int64_t>& budgets) {
  std::vector<std::vector<int>> prompts;  // each row's prompt up to where this call stops
  std::vector<int64_t> cached;
  for (size_t i = 0; i < slots.size(); ++i) {
    const std::vector<int>& prompt = slots_[slots[i]]->request.prompt;
    const int64_t n = static_cast<int64_t>(prompt.size());
    const int64_t length = cache_->length(slots[i]);
    const int64_t stop = budgets[i] > 0 ? std::min(n, length + budgets[i]) : n;
    prompts.emplace_back(prompt.begin(), prompt.begin() + stop);
    cached.push_back(length);
  }
  auto complete = [&](size_t i) {
    return prompts[i].size() == slots_[slots[i]]->request.prompt.size();
  };
  std::vector<int> first(slots.size(), -1);
  prefills_.fetch_add(1);
  const absl::Status status = TorchResult("prefill", [&] {
    std::vector<torch::Tensor> logits = decode_->Prefill(prompts, slots.front(), /*chunk=*/0);
    // The rows whose prompt is complete and that have no first token yet
    // draw theirs together: one sampling pass and one copy to the host.
    std::vector<size_t> drawing;
    std::vector<torch::Tensor> rows;
    std::vector<Sampler*> samplers;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (!complete(i)) continue;
      Entry& e = *slots_[slots[i]];
      first[i] = e.request.first_token;
      if (first[i] >= 0) continue;
      drawing.push_back(i);
      rows.push_back(logits[i]);
      samplers.push_back(e.sampler.get());
    }
    if (drawing.empty()) return absl::OkStatus();
    std::vector<absl::StatusOr<int64_t>> tokens = SampleRows(torch::cat(rows), samplers);
    for (size_t j = 0; j < drawing.size(); ++j) {
      if (!tokens[j].ok())
        return absl::InternalError(absl::StrCat("prefill: ", tokens[j].status().message()));
      first[drawing[j]] = static_cast<int>(*tokens[j]);
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    if (slots.size() > 1) {
      for (size_t i = 0; i < slots.size(); ++i) cache_->set_length(slots[i], cached[i]);
    } else {
      Finish(slots.front(), status);
    }
    return false;
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    Entry& e = *slots_[slots[i]];
    const int64_t computed = static_cast<int64_t>(prompts[i].size()) - cached[i];
    e.result.computed_prompt_tokens += computed;
    turn_prompt_tokens_ += computed;
    if (turn_prompt_tokens_ > max_turn_prompt_tokens_.load()) {
      max_turn_prompt_tokens_.store(turn_prompt_tokens_);
    }
    e.prefilling = !complete(i);
    if (e.prefilling) continue;
    if (e.request.first_token < 0) turn_drew_first_ = true;
    e.last_token = first[i];
    Emit(slots[i], e.last_token);
  }
  return true;
}

double BatchScheduler::Step() {
  // Rows [0, hi) run: up to the highest decoding row. Idle rows and rows
  // still prefilling feed a dummy token; its K/V lands at the row's length,
  // which the row's next real token (or prompt chunk) overwrites, and their
  // lengths are put back after the step.
  auto decoding = [&](int64_t s) { return slots_[s] != nullptr && !slots_[s]->prefilling; };
  int64_t hi = 0;
  for (int64_t s = 0; s < static_cast<int64_t>(slots_.size()); ++s) {
    if (decoding(s)) hi = s + 1;
  }
  if (hi == 0) return 0;
  std::vector<int64_t> ids(hi, 0), lengths(hi, 0);
  bool all_greedy = true;
  for (int64_t s = 0; s < hi; ++s) {
    if (slots_[s] == nullptr) cache_->set_length(s, 0);
    lengths[s] = cache_->length(s);
    if (!decoding(s)) continue;
    ids[s] = slots_[s]->last_token;
    all_greedy = all_greedy && slots_[s]->request.sampling.temperature == 0.0;
  }
  std::vector<int64_t> tokens(hi, 0);
  std::vector<absl::Status> row_status(hi);
  const absl::Time model_began = absl::Now();
  const absl::Status status = RunTorch("decode step", [&] {
    torch::Tensor logits = decode_->Run(ids, all_greedy ? &tokens : nullptr);  // (hi, V)
    if (all_greedy) return;
    // All rows sampled together on the logits' device; a row's trouble
    // (say, non-finite logits) is its own: it ends that row only. Idle rows
    // take a greedy sampler (their token is thrown away).
    Sampler idle(SamplingOptions{});
    std::vector<Sampler*> samplers(hi, &idle);
    for (int64_t s = 0; s < hi; ++s) {
      if (decoding(s)) samplers[s] = slots_[s]->sampler.get();
    }
    std::vector<absl::StatusOr<int64_t>> sampled = SampleRows(logits, samplers);
    for (int64_t s = 0; s < hi; ++s) {
      if (sampled[s].ok()) {
        tokens[s] = *sampled[s];
      } else {
        row_status[s] = sampled[s].status();
      }
    }
  });
  const double model_ms = absl::ToDoubleMilliseconds(absl::Now() - model_began);
  for (int64_t s = 0; s < hi; ++s) {
    if (!decoding(s)) cache_->set_length(s, lengths[s]);  // the dummy token's
  }
  if (!status.ok()) {
    for (int64_t s = 0; s < hi; ++s) {
      if (decoding(s)) Finish(s, status);
    }
    return model_ms;
  }
  steps_.fetch_add(1);
  for (int64_t s = 0; s < hi; ++s) {
    if (!decoding(s)) {
      continue;
    } else if (!row_status[s].ok()) {
      Finish(s, row_status[s]);
    } else {
      Emit(s, static_cast<int>(tokens[s]));
    }
  }
  return model_ms;
}

void BatchScheduler::Emit(int64_t slot, int token) {
  Entry& e = *slots_[slot];
  e.last_token = token;
  e.result.output_ids.push_back(token);
  if (e.callbacks->on_token) {
    turn_callbacks_.push_back([callbacks = e.callbacks, token] { callbacks->on_token(token); });
  }
  if (e.request.stop_at_end_of_text && token == options_.end_of_text_id) {
    e.result.finish_reason = "stop";
  } else if (static_cast<int64_t>(e.result.output_ids.size()) >= e.request.max_new_tokens) {
    e.result.finish_reason = "length";
  } else {
    return;
  }
  Finish(slot, absl::OkStatus());
}

void BatchScheduler::Finish(int64_t slot, const absl::Status& status) {
  std::unique_ptr<Entry> entry = std::move(slots_[slot]);
  cache_->tables().Park(slot);  // its pages back to the pool
  active_.fetch_sub(1);
  if (!status.ok()) entry->result.finish_reason.clear();
  End(*entry, status);
}

}  // namespace nanoserve
