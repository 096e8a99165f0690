#include "bench/front_door_bench.h"

#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/server_runner.h"
#include "bench/fail.h"
#include "bench/results.h"
#include "client/openai_client.h"
#include "engine/config.h"
#include "engine/model_loader.h"

namespace nanoserve {
namespace {

// What one streamed call looked like to its client.
struct ClientTimes {
  std::vector<int> ids;
  double ttft_ms = 0;       // request sent to the first token received
  double ms_per_token = 0;  // first to last token, per token after the first
};

void Finish(ClientTimes& t, absl::Time start, absl::Time first, absl::Time last) {
  t.ttft_ms = absl::ToDoubleMilliseconds(first - start);
  const size_t n = t.ids.size();
  t.ms_per_token = n > 1 ? absl::ToDoubleMilliseconds(last - first) / (n - 1) : 0;
}

absl::StatusOr<ClientTimes> ViaGrpc(v1::Decode::Stub& decode, const std::vector<int>& prompt,
                                    int64_t max_new) {
  ClientTimes t;
  absl::Time first, last;
  const absl::Time start = absl::Now();
  auto out = StreamGenerate(decode, GreedyRequest(prompt, max_new), absl::Minutes(5),
                            [&](const v1::Token& token) {
                              last = absl::Now();
                              if (t.ids.empty()) first = last;
                              t.ids.push_back(token.id());
                              return true;
                            });
  if (!out.ok()) return out.status();
  Finish(t, start, first, last);
  return t;
}

absl::StatusOr<ClientTimes> ViaHttp(httplib::Client& http, const std::string& model,
                                    const std::vector<int>& prompt, int64_t max_new) {
  ClientTimes t;
  absl::Time first, last;
  const absl::Time start = absl::Now();
  auto out =
      StreamCompletion(http, GreedyStreamBody(model, prompt, max_new), start + absl::Minutes(5),
                       [&](const std::vector<int>& ids, absl::Time arrived) {
                         if (ids.empty()) return true;
                         if (t.ids.empty()) first = arrived;
                         last = arrived;
                         t.ids.insert(t.ids.end(), ids.begin(), ids.end());
                         return true;
                       });
  if (!out.ok()) return out.status();
  Finish(t, start, first, last);
  return t;
}

}  // namespace

int RunBenchFrontDoor(const BenchServicesOptions& o) {
  auto config = LoadModelConfig(o.stack.model.spec);
  if (!config.ok()) return Fail(config.status());
  ServiceStackOptions stack_options = o.stack;
  if (stack_options.http_port < 0) stack_options.http_port = 0;
  auto stack = ServiceStack::Start(stack_options);
  if (!stack.ok()) return Fail(stack.status());
  auto decode = v1::Decode::NewStub(MakeChannel((*stack)->target(ServiceStack::kDecode), 8 << 20));
  std::unique_ptr<httplib::Client> http =
      NewHttpClient(absl::StrCat("127.0.0.1:", (*stack)->http_port()));
  const std::string model = o.stack.model.spec;  // --served_model_name defaults to --model
  const int64_t vocab = std::min<int64_t>(config->vocab_size, 50256);

  std::printf(
      "model %s, device %s, dtype %s, batch 1, greedy, %lld output tokens, prompts prefix-cached, "
      "median of %lld; times as each client sees them\n\n",
      o.stack.model.spec.c_str(), o.stack.model.device.c_str(), o.stack.model.dtype.c_str(),
      static_cast<long long>(o.max_new_tokens), static_cast<long long>(o.repeats));
  std::printf(
      "| prompt tokens | gRPC TTFT ms | HTTP TTFT ms | added TTFT ms | gRPC ms/token | HTTP "
      "ms/token | added ms/token | same tokens |\n|---|---|---|---|---|---|---|---|\n");
  int64_t salt = 0;
  for (int64_t length : o.prompt_lengths) {
    if (length + o.max_new_tokens > config->n_positions) continue;
    std::vector<double> g_ttft, h_ttft, g_tpot, h_tpot, d_ttft, d_tpot;
    bool same = true;
    for (int64_t r = 0; r < o.repeats; ++r) {
      std::vector<int> prompt;
      ++salt;
      for (int64_t i = 0; i < length; ++i) {
        prompt.push_back(static_cast<int>((i * 7919 + salt * 104729 + 11) % vocab));
      }
      if (auto warm = ViaGrpc(*decode, prompt, o.max_new_tokens); !warm.ok()) {
        return Fail(warm.status());
      }
      // Alternate which path goes first.
      absl::StatusOr<ClientTimes> g = absl::UnknownError(""), h = absl::UnknownError("");
      if (r % 2 == 0) {
        g = ViaGrpc(*decode, prompt, o.max_new_tokens);
        h = ViaHttp(*http, model, prompt, o.max_new_tokens);
      } else {
        h = ViaHttp(*http, model, prompt, o.max_new_tokens);
        g = ViaGrpc(*decode, prompt, o.max_new_tokens);
      }
      if (!g.ok()) return Fail(g.status());
      if (!h.ok()) return Fail(h.status());
      same = same && g->ids == h->ids;
      g_ttft.push_back(g->ttft_ms);
      h_ttft.push_back(h->ttft_ms);
      g_tpot.push_back(g->ms_per_token);
      h_tpot.push_back(h->ms_per_token);
      d_ttft.push_back(h->ttft_ms - g->ttft_ms);
      d_tpot.push_back(h->ms_per_token - g->ms_per_token);
    }
    std::printf("| %lld | %.2f | %.2f | %+.2f | %.3f | %.3f | %+.3f | %s |\n",
                static_cast<long long>(length), Median(g_ttft), Median(h_ttft), Median(d_ttft),
                Median(g_tpot), Median(h_tpot), Median(d_tpot), same ? "yes" : "no");
    std::fflush(stdout);
    if (!same) return Fail(absl::InternalError("gRPC and HTTP gave different tokens"));
  }
  return (*stack)->Stop().ok() ? 0 : 1;
}

}  // namespace nanoserve
