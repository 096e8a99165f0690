#include "bench/load_client.h"

#include <httplib.h>

#include <utility>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/server_runner.h"
#include "client/openai_client.h"
#include "client/service_client.h"

namespace nanoserve {
namespace {

ServerTimings FromProto(const v1::Timings& t) {
  ServerTimings s;
  s.ttft_ms = t.ttft_ms();
  s.prefill_ms = t.prefill_ms();
  s.prefill_first_token_ms = t.prefill_first_token_ms();
  s.prefill_server_ms = t.prefill_server_ms();
  s.prefill_store_ms = t.prefill_store_ms();
  s.prefill_compute_ms = t.prefill_compute_ms();
  s.fetch_ms = t.fetch_ms();
  s.submitted_ms = t.submitted_ms();
  s.queue_ms = t.queue_ms();
  s.second_token_ms = t.second_token_ms();
  s.kv_fetch_skipped = t.kv_fetch_skipped();
  return s;
}

class GrpcLoadClient : public LoadClient {
 public:
  GrpcLoadClient(const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : target_(target),
        stub_(v1::Decode::NewStub(MakeChannel(target, 8 << 20, std::move(credentials)))) {}

  absl::StatusOr<LoadResponse> Send(const LoadPrompt& prompt, const std::string& cache_salt,
                                    absl::Time deadline) override {
    v1::GenerateRequest request = GreedyRequest(prompt.prompt_ids, prompt.max_tokens);
    if (prompt.prompt_ids.empty()) request.set_prompt(prompt.prompt_text);
    request.set_cache_salt(cache_salt);
    LoadResponse response;
    auto outcome = StreamGenerate(*stub_, request, deadline - absl::Now(), [&](const v1::Token&) {
      response.token_times.push_back(absl::Now());
      return true;
    });
    if (!outcome.ok()) return outcome.status();
    response.prompt_tokens = outcome->finished.usage().prompt_tokens();
    response.cached_prompt_tokens = outcome->finished.usage().cached_prompt_tokens();
    if (outcome->finished.has_timings()) {
      response.server = FromProto(outcome->finished.timings());
      response.server->fallback_reason = outcome->finished.fallback_reason();
    }
    return response;
  }

  std::string Describe() const override { return absl::StrCat("grpc ", target_); }

 private:
  const std::string target_;
  const std::unique_ptr<v1::Decode::Stub> stub_;  // thread-safe
};

class HttpLoadClient : public LoadClient {
 public:
  HttpLoadClient(const std::string& target, std::string model)
      : target_(target), model_(std::move(model)) {}

  absl::StatusOr<LoadResponse> Send(const LoadPrompt& prompt, const std::string& cache_salt,
                                    absl::Time deadline) override {
    nlohmann::json body =
        GreedyStreamBody(model_,
                         prompt.prompt_ids.empty() ? nlohmann::json(prompt.prompt_text)
                                                   : nlohmann::json(prompt.prompt_ids),
                         prompt.max_tokens);
    if (!cache_salt.empty()) body["cache_salt"] = cache_salt;
    LoadResponse response;
    std::unique_ptr<httplib::Client> http = Take();
    auto out = StreamCompletion(
        *http, body, deadline, [&](const std::vector<int>& ids, absl::Time arrived) {
          response.token_times.insert(response.token_times.end(), ids.size(), arrived);
          return true;
        });
    if (!out.ok()) return out.status();  // the connection may be broken: not kept
    Give(std::move(http));
    if (out->usage.is_object()) {
      response.prompt_tokens = out->usage.value("prompt_tokens", int64_t{0});
      response.cached_prompt_tokens = out->usage.value(
          nlohmann::json::json_pointer("/prompt_tokens_details/cached_tokens"), int64_t{0});
    }
    return response;
  }

  std::string Describe() const override {
    return absl::StrCat("http ", target_, " (model ", model_, ")");
  }

 private:
  // An idle kept-alive connection, or a new one.
  std::unique_ptr<httplib::Client> Take() {
    {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty()) {
        std::unique_ptr<httplib::Client> http = std::move(idle_.back());
        idle_.pop_back();
        return http;
      }
    }
    return NewHttpClient(target_);
  }

  void Give(std::unique_ptr<httplib::Client> http) {
    absl::MutexLock lock(&mu_);
    idle_.push_back(std::move(http));
  }

  const std::string target_;
  const std::string model_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<httplib::Client>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<LoadClient> MakeGrpcLoadClient(
    const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return std::make_unique<GrpcLoadClient>(target, std::move(credentials));
}

absl::StatusOr<std::unique_ptr<LoadClient>> MakeHttpLoadClient(const std::string& target,
                                                               const std::string& model) {
  std::string id = model;
  if (id.empty()) {
    std::unique_ptr<httplib::Client> http = NewHttpClient(target);
    http->set_connection_timeout(10, 0);
    http->set_read_timeout(10, 0);
    absl::StatusOr<std::string> served = ServedModelId(*http);
    if (!served.ok()) return served.status();
    id = *served;
  }
  return std::make_unique<HttpLoadClient>(target, id);
}

}  // namespace nanoserve
