#include "cli/remote_commands.h"

#include <cstdio>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/server_runner.h"
#include "google/protobuf/util/json_util.h"
#include "kv_store/client/kv_store_client.h"
#include "rpc/sampling_proto.h"

namespace nanoserve {
namespace {

int FailWithCode(const absl::Status& status) {
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
  request.set_cache_salt(o.cache_salt);
  return request;
}

}  // namespace

int RunRemoteGenerate(const GenerateCommandOptions& o, const std::string& target,
                      absl::Duration timeout,
                      std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto prompts = ReadPrompts(o);
  if (!prompts.ok()) return FailWithCode(prompts.status());
  if (prompts->size() != 1) {
    return FailWithCode(absl::InvalidArgumentError("generate --target takes one prompt"));
  }
  auto stub = v1::Decode::NewStub(MakeChannel(target, 8 << 20, std::move(credentials)));
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
  if (!outcome.ok()) return FailWithCode(outcome.status());
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
  std::fprintf(
      stderr,
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

int RunStats(const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  KvStoreClientOptions options;
  options.target = target;
  options.credentials = std::move(credentials);
  KvStoreClient store(options);
  auto stats = store.Stats();
  if (!stats.ok()) return FailWithCode(stats.status());
  std::printf("%s\n", ToJson(*stats).c_str());
  return 0;
}

int RunServe(const ServiceStackOptions& stack_options, const GenerateCommandOptions& generate,
             std::unique_ptr<MpsDaemon>* mps) {
  // Keep SIGINT/SIGTERM for sigwait below; the children reset their mask.
  BlockTerminationSignals();
  auto stack = ServiceStack::Start(stack_options);
  if (!stack.ok() && mps != nullptr && *mps != nullptr) {
    std::fprintf(stderr,
                 "nanoserve serve: the services did not start under MPS (%s); again without it\n",
                 std::string(stack.status().message()).c_str());
    mps->reset();
    stack = ServiceStack::Start(stack_options);
  }
  if (!stack.ok()) return FailWithCode(stack.status());
  ServiceStack& s = **stack;
  std::fprintf(stderr,
               "nanoserve serve: kv store %s, prefill %s, decode %s (metrics ports %d, %d, %d; "
               "logs in %s)\n",
               s.target(ServiceStack::kKvStore).c_str(), s.target(ServiceStack::kPrefill).c_str(),
               s.target(ServiceStack::kDecode).c_str(), s.metrics_port(ServiceStack::kKvStore),
               s.metrics_port(ServiceStack::kPrefill), s.metrics_port(ServiceStack::kDecode),
               stack_options.work_dir.c_str());
  if (s.http_port() != 0) {
    std::fprintf(stderr, "nanoserve serve: OpenAI-compatible API at %s/v1\n",
                 s.http_base_url().c_str());
  }
  int code = 0;
  if (!generate.prompt.empty() || !generate.prompt_file.empty()) {
    code = RunRemoteGenerate(generate, s.target(ServiceStack::kDecode), absl::Minutes(10));
  } else {
    std::fprintf(stderr, "nanoserve serve: serving until Ctrl-C or SIGTERM\n");
    WaitForTerminationSignal();
  }
  absl::Status stopped = s.Stop();
  if (!stopped.ok()) std::fprintf(stderr, "nanoserve serve: %s\n", stopped.ToString().c_str());
  return code;
}

}  // namespace nanoserve
