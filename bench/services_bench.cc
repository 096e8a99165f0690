#include "bench/services_bench.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/dtype.h"
#include "base/server_runner.h"
#include "bench/fail.h"
#include "bench/results.h"
#include "engine/device.h"
#include "engine/generate.h"
#include "engine/model_loader.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/client/kv_store_client.h"

namespace nanoserve {
namespace {

// The median, or 0 when nothing was measured.
double MedianOrZero(const std::vector<double>& values) {
  return values.empty() ? 0 : Median(values);
}

// `length` synthetic token ids below `vocab`, different for each `salt`.
std::vector<int> SyntheticPrompt(int64_t length, int64_t salt, int64_t vocab) {
  std::vector<int> prompt;
  for (int64_t i = 0; i < length; ++i) {
    prompt.push_back(static_cast<int>((i * 7919 + salt * 104729 + 11) % vocab));
  }
  return prompt;
}

// What the two paths measured for one prompt length, over the repeats.
struct RowTimes {
  std::vector<double> offline_ttft, offline_tpot, cold_ttft, cached_ttft, service_tpot, handoff;
  // Where a cold request's time to first token went (decode's Timings).
  // first_token_ms: from the Prefill call's start to prefill's first-token
  // message (the call itself ends after the store's calls).
  std::vector<double> prefill_ms, first_token_ms, fetch_ms, queue_ms;
  // The same call as prefill reported it: in the service, in store calls,
  // the rest (forward pass, sampling).
  std::vector<double> prefill_server_ms, prefill_store_ms, prefill_compute_ms;
  double fetched_mib = 0;
  bool same_tokens = true;
  // Why requests were not served as designed (decode's fallback_reason):
  // such a row measures the fallback, not the path.
  std::vector<std::string> fallbacks;
};

// One prompt through the offline engine, then twice through the services
// (cold, then prefix-cached), into `times`.
absl::Status MeasurePrompt(Generator& generator, const GenerateOptions& offline,
                           v1::Decode::Stub& decode, const std::vector<int>& prompt,
                           RowTimes& times) {
  auto off = generator.Generate({prompt}, offline);
  if (!off.ok()) return off.status();
  times.offline_ttft.push_back(off->stats.ttft_ms);
  times.offline_tpot.push_back(off->stats.decode_ms_per_step);
  for (int pass = 0; pass < 2; ++pass) {
    auto served =
        StreamGenerate(decode, GreedyRequest(prompt, offline.max_new_tokens), absl::Minutes(5));
    if (!served.ok()) return served.status();
    const v1::Timings& t = served->finished.timings();
    if (!served->finished.fallback_reason().empty()) {
      times.fallbacks.push_back(served->finished.fallback_reason());
    }
    (pass == 0 ? times.cold_ttft : times.cached_ttft).push_back(t.ttft_ms());
    if (pass == 0) {
      times.prefill_ms.push_back(t.prefill_ms());
      // Without a first-token message (prefill's one answer) the token came
      // with the call's end.
      times.first_token_ms.push_back(t.prefill_first_token_ms() > 0 ? t.prefill_first_token_ms()
                                                                    : t.prefill_ms());
      times.fetch_ms.push_back(t.fetch_ms());
      times.queue_ms.push_back(t.queue_ms());
      times.prefill_server_ms.push_back(t.prefill_server_ms());
      times.prefill_store_ms.push_back(t.prefill_store_ms());
      times.prefill_compute_ms.push_back(t.prefill_compute_ms());
    }
    times.service_tpot.push_back(t.ms_per_output_token());
    if (t.fetch_ms() > 0 && t.kv_bytes_fetched() > 0) {
      times.handoff.push_back(t.kv_bytes_fetched() / 1e6 / (t.fetch_ms() / 1e3));
      times.fetched_mib = t.kv_bytes_fetched() / 1048576.0;
    }
    times.same_tokens = times.same_tokens && served->output_ids == off->sequences[0].output_ids;
  }
  return absl::OkStatus();
}

// A cached prefix with new tokens after it (DESIGN's target: within 1 ms of
// the offline TTFT of the new tokens alone), per prefix length.
struct PrefixPlusNewTimes {
  std::vector<double> offline_new_ttft, offline_whole_ttft, services_ttft;
  std::vector<int64_t> cached_tokens;
  bool same_tokens = true;
};

// Per repeat, a prefix and new tokens (prompts[r] = {prefix, fresh}): the
// offline engine's TTFT of every fresh part alone, then of every whole
// prompt (each length in a run of its own: the engine keeps the graphs of
// one prompt length between calls), then each prefix through the services
// (so that the store holds its pages) and the whole prompt after it.
absl::Status MeasurePrefixPlusNew(
    Generator& generator, const GenerateOptions& offline, v1::Decode::Stub& decode,
    const std::vector<std::pair<std::vector<int>, std::vector<int>>>& prompts,
    PrefixPlusNewTimes& times) {
  std::vector<std::vector<int>> wholes;
  for (const auto& [prefix, fresh] : prompts) {
    wholes.push_back(prefix);
    wholes.back().insert(wholes.back().end(), fresh.begin(), fresh.end());
    auto alone = generator.Generate({fresh}, offline);
    if (!alone.ok()) return alone.status();
    times.offline_new_ttft.push_back(alone->stats.ttft_ms);
  }
  std::vector<std::vector<int>> offline_ids;
  for (const std::vector<int>& whole : wholes) {
    auto off = generator.Generate({whole}, offline);
    if (!off.ok()) return off.status();
    times.offline_whole_ttft.push_back(off->stats.ttft_ms);
    offline_ids.push_back(off->sequences[0].output_ids);
  }
  for (size_t r = 0; r < prompts.size(); ++r) {
    auto seeded = StreamGenerate(decode, GreedyRequest(prompts[r].first, offline.max_new_tokens),
                                 absl::Minutes(5));
    if (!seeded.ok()) return seeded.status();
    auto served =
        StreamGenerate(decode, GreedyRequest(wholes[r], offline.max_new_tokens), absl::Minutes(5));
    if (!served.ok()) return served.status();
    times.services_ttft.push_back(served->finished.timings().ttft_ms());
    times.cached_tokens.push_back(served->finished.usage().cached_prompt_tokens());
    times.same_tokens = times.same_tokens && served->output_ids == offline_ids[r];
  }
  return absl::OkStatus();
}

// The same handoff through the store's pool mapped in place (when this
// process can map it): the Fetch of page ids plus one gather onto `device`,
// and the gather alone.
absl::Status PrintSharedFetch(KvStoreClient& store, uint64_t lease_id, int64_t repeats,
                              torch::Device device) {
  auto pool = store.Pool();
  if (!pool.ok()) return pool.status();
  if (*pool == nullptr) {
    std::printf("\nKV handoff in place: none (%s)\n", store.TransportDescription().c_str());
    return absl::OkStatus();
  }
  std::vector<double> handoff, gather;
  int64_t bytes = 0;
  for (int64_t r = 0; r < repeats + 1; ++r) {  // the first is a warm-up
    const absl::Time start = absl::Now();
    int64_t tokens = 0;
    auto pages = store.FetchShared(**pool, lease_id, &tokens);
    if (!pages.ok()) return pages.status();
    const absl::Time fetched = absl::Now();
    auto run = ReadPages((*pool)->storage, *pages, device);
    if (!run.ok()) return run.status();
    WaitForDevice(device);
    const absl::Time done = absl::Now();
    bytes = run->nbytes();
    if (r == 0) continue;
    handoff.push_back(bytes / 1e6 / absl::ToDoubleSeconds(done - start));
    gather.push_back(bytes / 1e6 / absl::ToDoubleSeconds(done - fetched));
  }
  std::printf(
      "\nKV handoff in place (%s, %s, %.2f MiB, median of %lld):\n\n"
      "| Fetch (page ids) + gather MB/s | gather alone MB/s |\n|---|---|\n| %.0f | %.0f |\n",
      std::string(KvTransportName((*pool)->transport)).c_str(), device.str().c_str(),
      bytes / 1048576.0, static_cast<long long>(repeats), Median(handoff), Median(gather));
  return absl::OkStatus();
}

// The store -> reader handoff alone: Fetch the pages cached for `prompt` a
// few times from this process, for a few chunk sizes, then in place.
absl::Status PrintFetchTable(const std::string& store_target, const std::vector<int>& prompt,
                             int64_t repeats, torch::Device device) {
  KvStoreClientOptions options;
  options.target = store_target;
  options.device = device;
  KvStoreClient store(options);
  auto match = store.MatchPrefix(std::vector<int32_t>(prompt.begin(), prompt.end()));
  if (!match.ok() || match->matched_tokens == 0) return absl::OkStatus();
  std::printf(
      "\nKV handoff, Fetch alone (store -> this process, %lld tokens):\n\n"
      "| chunk KiB | MiB | MB/s (median of %lld) |\n|---|---|---|\n",
      static_cast<long long>(match->matched_tokens), static_cast<long long>(repeats));
  for (int64_t chunk_kb : {256, 1024, 4096}) {
    options.chunk_bytes = chunk_kb << 10;
    KvStoreClient chunked(options);
    std::vector<double> rates;
    int64_t bytes = 0;
    for (int64_t r = 0; r < repeats; ++r) {
      const absl::Time start = absl::Now();
      auto fetched = chunked.Fetch(match->lease_id);
      if (!fetched.ok()) return fetched.status();
      bytes = fetched->bytes;
      rates.push_back(bytes / 1e6 / absl::ToDoubleSeconds(absl::Now() - start));
    }
    std::printf("| %lld | %.2f | %.0f |\n", static_cast<long long>(chunk_kb), bytes / 1048576.0,
                Median(rates));
  }
  const absl::Status shared = PrintSharedFetch(store, match->lease_id, repeats, device);
  store.Release(match->lease_id).IgnoreError();
  return shared;
}

}  // namespace

int RunBenchServices(const BenchServicesOptions& o) {
  const ServiceModel& m = o.stack.model;
  auto model_options = ParseModelOptions(m.device, m.dtype, m.attention);
  if (!model_options.ok()) return Fail(model_options.status());
  auto loaded = LoadModel(m.spec, *model_options, m.seed);
  if (!loaded.ok()) return Fail(loaded.status());
  const Gpt2Model& model = *loaded->model;
  const int64_t vocab = std::min<int64_t>(model.config().vocab_size, 50256);
  ServiceStackOptions stack_options = o.stack;
  stack_options.kv_store.chunk_kb = 4096;  // lets Fetch alone try 4 MiB
  auto stack = ServiceStack::Start(stack_options);
  if (!stack.ok()) return Fail(stack.status());
  auto decode = v1::Decode::NewStub(MakeChannel((*stack)->target(ServiceStack::kDecode), 8 << 20));

  Generator generator(&model);
  GenerateOptions offline;
  offline.max_new_tokens = o.max_new_tokens;
  offline.stop_at_end_of_text = false;
  // Warm-up: first calls pay allocation and thread start-up.
  generator.Generate({SyntheticPrompt(8, 999, vocab)}, offline).IgnoreError();
  StreamGenerate(*decode, GreedyRequest(SyntheticPrompt(8, 998, vocab), o.max_new_tokens),
                 absl::Minutes(5))
      .IgnoreError();

  std::printf(
      "model %s, device %s, dtype %s, attention %s, batch 1, greedy, %lld output tokens, "
      "median of %lld\n\n",
      loaded->description.c_str(), model_options->device.str().c_str(),
      DtypeName(model_options->dtype).c_str(), m.attention.c_str(),
      static_cast<long long>(o.max_new_tokens), static_cast<long long>(o.repeats));
  std::printf(
      "| prompt tokens | offline TTFT ms | services TTFT ms (cold) | services TTFT ms (prefix "
      "cached) "
      "| offline ms/token | services ms/token | KV fetched MiB | handoff MB/s | same tokens |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  int64_t salt = 0;
  std::string breakdown =
      "\nServices, cold, where the time went (medians): decode streams prefill's first token "
      "as soon as prefill's first-token message comes ('first token ms', from the Prefill "
      "call's start), before prefill stores the pages and the call returns; then it reads the "
      "prompt's pages and queues for a slot; 'rest' is TTFT less 'first token ms': decode's own "
      "work before the first token (tokenizing, streaming); inside the call, as prefill "
      "reported it: its own time, the part in KV store calls (match, load, reserve, commit: the "
      "commit waits for the device), and the rest (forward, sampling); 'gRPC' is the call less "
      "prefill's own time:\n\n"
      "| prompt tokens | TTFT ms | first token ms | Prefill call ms | in prefill ms "
      "| store calls ms | compute ms | gRPC ms | rest ms | then: page read ms | queue ms |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (int64_t length : o.prompt_lengths) {
    if (length + o.max_new_tokens > model.config().n_positions) continue;
    RowTimes t;
    for (int64_t r = 0; r < o.repeats; ++r) {
      const absl::Status s =
          MeasurePrompt(generator, offline, *decode, SyntheticPrompt(length, ++salt, vocab), t);
      if (!s.ok()) return Fail(s);
    }
    std::printf("| %lld | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %s |\n",
                static_cast<long long>(length), MedianOrZero(t.offline_ttft),
                MedianOrZero(t.cold_ttft), MedianOrZero(t.cached_ttft),
                MedianOrZero(t.offline_tpot), MedianOrZero(t.service_tpot), t.fetched_mib,
                MedianOrZero(t.handoff), t.same_tokens ? "yes" : "no");
    for (const std::string& reason : t.fallbacks) {
      std::fprintf(stderr, "bench-services: a %lld-token request fell back: %s\n",
                   static_cast<long long>(length), reason.c_str());
    }
    std::fflush(stdout);
    const double ttft = MedianOrZero(t.cold_ttft), prefill = MedianOrZero(t.prefill_ms),
                 fetch = MedianOrZero(t.fetch_ms), queue = MedianOrZero(t.queue_ms),
                 server = MedianOrZero(t.prefill_server_ms), first = MedianOrZero(t.first_token_ms);
    breakdown += absl::StrFormat(
        "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", length,
        ttft, first, prefill, server, MedianOrZero(t.prefill_store_ms),
        MedianOrZero(t.prefill_compute_ms), prefill - server, ttft - first, fetch, queue);
  }
  std::printf("%s", breakdown.c_str());
  const int64_t fresh_tokens = 50;
  std::printf(
      "\nA cached prefix and %lld new tokens: the prefix sent first (the store then holds its "
      "whole pages), then the prefix and the new tokens; beside it the offline engine's TTFT of "
      "the new tokens alone and of the whole prompt (medians):\n\n"
      "| prefix tokens | cached tokens | offline TTFT ms, new alone | offline TTFT ms, whole "
      "| services TTFT ms | less offline (new alone) | same tokens |\n"
      "|---|---|---|---|---|---|---|\n",
      static_cast<long long>(fresh_tokens));
  for (int64_t length : o.prompt_lengths) {
    if (length + fresh_tokens + o.max_new_tokens > model.config().n_positions) continue;
    PrefixPlusNewTimes t;
    std::vector<std::pair<std::vector<int>, std::vector<int>>> prompts;
    for (int64_t r = 0; r < o.repeats; ++r) {
      std::vector<int> prefix = SyntheticPrompt(length, ++salt, vocab);
      prompts.emplace_back(std::move(prefix), SyntheticPrompt(fresh_tokens, ++salt, vocab));
    }
    const absl::Status s = MeasurePrefixPlusNew(generator, offline, *decode, prompts, t);
    if (!s.ok()) return Fail(s);
    std::vector<double> cached(t.cached_tokens.begin(), t.cached_tokens.end());
    std::printf("| %lld | %.0f | %.2f | %.2f | %.2f | %.2f | %s |\n",
                static_cast<long long>(length), MedianOrZero(cached),
                MedianOrZero(t.offline_new_ttft), MedianOrZero(t.offline_whole_ttft),
                MedianOrZero(t.services_ttft),
                MedianOrZero(t.services_ttft) - MedianOrZero(t.offline_new_ttft),
                t.same_tokens ? "yes" : "no");
    std::fflush(stdout);
  }
  if (!o.prompt_lengths.empty()) {  // the longest prompt above, cached by now
    const int64_t longest = *std::max_element(o.prompt_lengths.begin(), o.prompt_lengths.end());
    const std::vector<int> cached = SyntheticPrompt(
        std::min(longest, model.config().n_positions - o.max_new_tokens), salt, vocab);
    const absl::Status fetched =
        PrintFetchTable((*stack)->target(ServiceStack::kKvStore), cached,
                        std::max<int64_t>(o.repeats, 5), model_options->device);
    if (!fetched.ok()) return Fail(fetched);
  }
  return (*stack)->Stop().ok() ? 0 : 1;
}

}  // namespace nanoserve
