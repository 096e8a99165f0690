#include "client/remote_commands.h"

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/device.h"
#include "engine/generate.h"
#include "engine/model_loader.h"
#include "engine/tokenizer.h"
#include "google/protobuf/util/json_util.h"
#include "kv_store/client/kv_store_client.h"
#include "rpc/sampling_proto.h"
#include "rpc/server_runner.h"

namespace nanoserve {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "nanoserve: %s\n", status.ToString().c_str());
  return 1;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

v1::GenerateRequest MakeRequest(const GenerateCommandOptions& o, const std::string& prompt) {
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.set_max_new_tokens(o.generate.max_new_tokens);
  *request.mutable_sampling() = SamplingToProto(o.generate.sampling);
  request.set_ignore_eos(!o.generate.stop_at_end_of_text);
  return request;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int RunRemoteGenerate(const GenerateCommandOptions& o, const std::string& target,
                      absl::Duration timeout) {
  auto prompts = ReadPrompts(o);
  if (!prompts.ok()) return Fail(prompts.status());
  if (prompts->size() != 1) {
    return Fail(absl::InvalidArgumentError("generate --target takes one prompt"));
  }
  auto stub = v1::Decode::NewStub(MakeChannel(target, 8 << 20));
  const std::string& prompt = (*prompts)[0];
  if (!o.json) std::printf("%s", prompt.c_str());
  auto outcome = StreamGenerate(*stub, MakeRequest(o, prompt), timeout, [&](const v1::Token& t) {
    if (!o.json) {
      std::printf("%s", t.text().c_str());
      std::fflush(stdout);
    }
    return true;
  });
  if (!o.json) std::printf("\n");
  if (!outcome.ok()) return Fail(outcome.status());
  const v1::Finished& f = outcome->finished;
  if (o.json) {
    nlohmann::json out = {{"output_ids", outcome->output_ids},
                          {"text", outcome->text},
                          {"target", target},
                          {"finished", nlohmann::json::parse(ToJson(f))}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (!f.trailing_text().empty()) std::printf("%s\n", f.trailing_text().c_str());
  std::fprintf(stderr,
               "\n--- %s: prompt tokens %lld (cached %lld, fetched %lld, recomputed by decode %lld), "
               "output tokens %lld, finish %s\n"
               "    time to first token %.2f ms (prefill %.2f, fetch %.2f, queue %.2f), "
               "%.3f ms per output token, total %.2f ms, KV fetched %.2f MiB\n",
               target.c_str(), static_cast<long long>(f.usage().prompt_tokens()),
               static_cast<long long>(f.usage().cached_prompt_tokens()),
               static_cast<long long>(f.usage().fetched_prompt_tokens()),
               static_cast<long long>(f.usage().recomputed_prompt_tokens()),
               static_cast<long long>(f.usage().output_tokens()), f.finish_reason().c_str(),
               f.timings().ttft_ms(), f.timings().prefill_ms(), f.timings().fetch_ms(),
               f.timings().queue_ms(), f.timings().ms_per_output_token(), f.timings().total_ms(),
               f.timings().kv_bytes_fetched() / 1048576.0);
  if (!f.fallback_reason().empty()) {
    std::fprintf(stderr, "    fallback: %s\n", f.fallback_reason().c_str());
  }
  return 0;
}

int RunStats(const std::string& target) {
  KvStoreClientOptions options;
  options.target = target;
  KvStoreClient store(options);
  auto stats = store.Stats();
  if (!stats.ok()) return Fail(stats.status());
  std::printf("%s\n", ToJson(*stats).c_str());
  return 0;
}

int RunServe(const ServiceStackOptions& stack_options, const GenerateCommandOptions& generate) {
  // Keep SIGINT/SIGTERM for sigwait below; the children reset their mask.
  BlockTerminationSignals();
  auto stack = ServiceStack::Start(stack_options);
  if (!stack.ok()) return Fail(stack.status());
  ServiceStack& s = **stack;
  std::fprintf(stderr,
               "nanoserve serve: kv store %s, prefill %s, decode %s (metrics ports %d, %d, %d; "
               "logs in %s)\n",
               s.target(ServiceStack::kKvStore).c_str(), s.target(ServiceStack::kPrefill).c_str(),
               s.target(ServiceStack::kDecode).c_str(), s.metrics_port(ServiceStack::kKvStore),
               s.metrics_port(ServiceStack::kPrefill), s.metrics_port(ServiceStack::kDecode),
               stack_options.work_dir.c_str());
  int code = 0;
  if (!generate.prompt.empty() || !generate.prompt_file.empty()) {
    code = RunRemoteGenerate(generate, s.target(ServiceStack::kDecode), absl::Minutes(10));
  } else {
    std::fprintf(stderr, "nanoserve serve: serving until Ctrl-C or SIGTERM\n");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int signal_number = 0;
    sigwait(&set, &signal_number);
  }
  absl::Status stopped = s.Stop();
  if (!stopped.ok()) std::fprintf(stderr, "nanoserve serve: %s\n", stopped.ToString().c_str());
  return code;
}

int RunBenchServices(const BenchServicesOptions& o) {
  auto parsed = ParseModelOptions(o.stack.device, o.stack.dtype, o.attention);
  if (!parsed.ok()) return Fail(parsed.status());
  const ModelOptions model_options = *parsed;
  auto loaded = LoadModel(o.stack.model, model_options, o.stack.seed);
  if (!loaded.ok()) return Fail(loaded.status());
  const Gpt2Model& model = *loaded->model;
  const int64_t vocab = std::min<int64_t>(model.config().vocab_size, 50256);
  ServiceStackOptions stack_options = o.stack;
  stack_options.kv_store_flags.push_back("--chunk_kb=4096");  // lets Fetch alone try 4 MiB
  auto stack = ServiceStack::Start(stack_options);
  if (!stack.ok()) return Fail(stack.status());
  auto stub = v1::Decode::NewStub(MakeChannel((*stack)->target(ServiceStack::kDecode), 8 << 20));

  Generator generator(&model);
  GenerateOptions offline;
  offline.max_new_tokens = o.max_new_tokens;
  offline.stop_at_end_of_text = false;
  auto make_prompt = [&](int64_t length, int64_t salt) {
    std::vector<int> p;
    for (int64_t i = 0; i < length; ++i) p.push_back(static_cast<int>((i * 7919 + salt * 104729 + 11) % vocab));
    return p;
  };
  auto request_for = [&](const std::vector<int>& p) {
    v1::GenerateRequest r;
    r.mutable_prompt_ids()->Add(p.begin(), p.end());
    r.set_max_new_tokens(o.max_new_tokens);
    r.set_ignore_eos(true);
    return r;
  };
  // Warm-up: first calls pay allocation and thread start-up.
  generator.Generate({make_prompt(8, 999)}, offline).IgnoreError();
  StreamGenerate(*stub, request_for(make_prompt(8, 998)), absl::Minutes(5)).IgnoreError();

  std::printf("model %s, device %s, dtype %s, batch 1, greedy, %lld output tokens, median of %lld\n\n",
              loaded->description.c_str(), model_options.device.str().c_str(), DtypeName(model_options.dtype).c_str(),
              static_cast<long long>(o.max_new_tokens), static_cast<long long>(o.repeats));
  std::printf("| prompt tokens | offline TTFT ms | services TTFT ms (cold) | services TTFT ms (prefix cached) "
              "| offline ms/token | services ms/token | KV fetched MiB | handoff MB/s | same tokens |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  int salt = 0;
  for (int64_t length : o.prompt_lengths) {
    if (length + o.max_new_tokens > model.config().n_positions) continue;
    std::vector<double> off_ttft, off_tpot, cold_ttft, warm_ttft, svc_tpot, rate;
    double fetched_mib = 0;
    bool same = true;
    for (int64_t r = 0; r < o.repeats; ++r) {
      const std::vector<int> prompt = make_prompt(length, ++salt);
      auto off = generator.Generate({prompt}, offline);
      if (!off.ok()) return Fail(off.status());
      off_ttft.push_back(off->stats.ttft_ms);
      off_tpot.push_back(off->stats.decode_ms_per_step);
      for (int pass = 0; pass < 2; ++pass) {  // cold, then the same prompt again
        auto svc = StreamGenerate(*stub, request_for(prompt), absl::Minutes(5));
        if (!svc.ok()) return Fail(svc.status());
        const v1::Timings& t = svc->finished.timings();
        (pass == 0 ? cold_ttft : warm_ttft).push_back(t.ttft_ms());
        svc_tpot.push_back(t.ms_per_output_token());
        if (t.fetch_ms() > 0 && t.kv_bytes_fetched() > 0) {
          rate.push_back(t.kv_bytes_fetched() / 1e6 / (t.fetch_ms() / 1e3));
          fetched_mib = t.kv_bytes_fetched() / 1048576.0;
        }
        same = same && svc->output_ids == off->sequences[0].output_ids;
      }
    }
    std::printf("| %lld | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %s |\n",
                static_cast<long long>(length), Median(off_ttft), Median(cold_ttft),
                Median(warm_ttft), Median(off_tpot), Median(svc_tpot), fetched_mib, Median(rate),
                same ? "yes" : "no");
    std::fflush(stdout);
  }
  // The store -> reader handoff alone: Fetch the pages of the longest prompt
  // above (cached by now) a few times from this process.
  KvStoreClientOptions store_options;
  store_options.target = (*stack)->target(ServiceStack::kKvStore);
  KvStoreClient store(store_options);
  const int64_t longest = *std::max_element(o.prompt_lengths.begin(), o.prompt_lengths.end());
  const std::vector<int> cached = make_prompt(std::min(longest, model.config().n_positions - o.max_new_tokens), salt);
  auto match = store.MatchPrefix(std::vector<int32_t>(cached.begin(), cached.end()));
  if (match.ok() && match->matched_tokens > 0) {
    std::printf("\nKV handoff, Fetch alone (store -> this process, %lld tokens):\n\n"
                "| chunk KiB | MiB | MB/s (median of %lld) |\n|---|---|---|\n",
                static_cast<long long>(match->matched_tokens),
                static_cast<long long>(std::max<int64_t>(o.repeats, 5)));
    for (int64_t chunk_kb : {256, 1024, 4096}) {
      store_options.chunk_bytes = chunk_kb << 10;
      KvStoreClient chunked(store_options);
      std::vector<double> rates;
      int64_t bytes = 0;
      for (int64_t r = 0; r < std::max<int64_t>(o.repeats, 5); ++r) {
        const absl::Time t = absl::Now();
        auto fetched = chunked.Fetch(match->lease_id);
        if (!fetched.ok()) return Fail(fetched.status());
        bytes = fetched->bytes;
        rates.push_back(bytes / 1e6 / absl::ToDoubleSeconds(absl::Now() - t));
      }
      std::printf("| %lld | %.2f | %.0f |\n", static_cast<long long>(chunk_kb), bytes / 1048576.0,
                  Median(rates));
    }
    store.Release(match->lease_id).IgnoreError();
  }
  return (*stack)->Stop().ok() ? 0 : 1;
}

}  // namespace nanoserve
