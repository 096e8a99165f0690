#include "decode_service/decode_flags.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "base/server_runner.h"
#include "engine/decode_step.h"
#include "engine/memory_budget.h"
#include "kv_store/client/store_client_flags.h"
#include "rpc/service_main.h"

ABSL_FLAG(std::string, prefill, nanoserve::DecodeOptions().prefill,
          "prefill address; empty = compute here");
NANOSERVE_FLAG_IN_RANGE(max_batch, nanoserve::DecodeOptions().max_batch, 1, 4096,
                        "sequences decoded together (KV cache slots)");
NANOSERVE_FLAG_IN_RANGE(max_context, nanoserve::DecodeOptions().max_context, 0, 1048576,
                        "tokens per slot (0 = the model's context)");
NANOSERVE_FLAG_IN_RANGE(kv_pool_tokens, nanoserve::DecodeOptions().kv_pool_tokens, 0, 2147483648,
                        "tokens the KV page pool holds over all slots (0 = max_batch x "
                        "max_context); a request waits for the pages of its whole sequence");
NANOSERVE_FLAG_IN_RANGE(kv_page_size, nanoserve::DecodeOptions().kv_page_size, 1, 65536,
                        "tokens per page of the KV pool");
NANOSERVE_FLAG_IN_RANGE(max_queue, nanoserve::DecodeOptions().max_queue, 0, 1048576,
                        "calls waiting for a slot, at most");
NANOSERVE_FLAG_IN_RANGE(max_tokens_in_flight, nanoserve::DecodeOptions().max_tokens_in_flight, 0,
                        1099511627776,
                        "tokens of work admitted at once, prompts + max_tokens over every call "
                        "(0 = 4 x max_batch x the context); beyond: RESOURCE_EXHAUSTED / 429");
NANOSERVE_FLAG_IN_RANGE(max_tokens_in_flight_per_caller,
                        nanoserve::DecodeOptions().max_tokens_in_flight_per_caller, 0,
                        1099511627776,
                        "of --max_tokens_in_flight, what one caller (its TLS identity, else its "
                        "address; an HTTP client's address) may hold at once (0 = half); beyond: "
                        "RESOURCE_EXHAUSTED / 429 for that caller, while others are admitted");
NANOSERVE_FLAG_IN_RANGE(prefill_chunk, nanoserve::DecodeOptions().prefill_chunk, 0, 1048576,
                        "prompt tokens computed here per scheduler turn, over all prompts, "
                        "oldest first (0 = each prompt all at once)");
NANOSERVE_FLAG_IN_RANGE(prefill_timeout_ms, nanoserve::DecodeOptions().prefill_timeout_ms, 1,
                        86400000,
                        "deadline of the Prefill call (then decode computes the prompt itself; "
                        "3 in a row open a breaker: prefill is skipped for 5 s, then probed)");
NANOSERVE_FLAG_IN_RANGE(workers, nanoserve::DecodeOptions().workers, 1, 1024,
                        "threads for the calls' blocking steps (waiting for the Prefill call, the "
                        "page read): each waits for one call's, and at most this many more calls "
                        "start theirs before a worker takes them");
ABSL_FLAG(std::string, http_listen, nanoserve::DecodeOptions().http_listen,
          "OpenAI-compatible HTTP API (/v1/completions, /v1/models, /health), host:port "
          "(port 0 = any; host as --listen's: $NANOSERVE_LISTEN_HOST where set); empty = off; "
          "plaintext even with --tls_cert");
NANOSERVE_FLAG_IN_RANGE(http_threads, nanoserve::DecodeOptions().http_threads, 1, 64,
                        "HTTP event loop threads (each holds its share of the connections)");
NANOSERVE_FLAG_IN_RANGE(http_max_connections, nanoserve::DecodeOptions().http_max_connections, 1,
                        1048576, "HTTP connections open at once; a request beyond them gets 503");
NANOSERVE_FLAG_IN_RANGE(http_max_body_kb, nanoserve::DecodeOptions().http_max_body_kb, 1, 1048576,
                        "largest HTTP request body in KiB");
NANOSERVE_FLAG_IN_RANGE(http_timeout_s, nanoserve::DecodeOptions().http_timeout_s, 1, 86400,
                        "deadline of each HTTP completion");
ABSL_FLAG(std::string, api_key, nanoserve::DecodeOptions().api_key,
          "the bearer token /v1/ requests of the HTTP API must send ('Authorization: Bearer "
          "<key>', 401 otherwise; /health is open); empty: $NANOSERVE_API_KEY where set, else "
          "none");
ABSL_FLAG(bool, allow_insecure_http, nanoserve::DecodeOptions().allow_insecure_http,
          "let the HTTP API listen beyond loopback without --api_key (something else guards "
          "it: a NetworkPolicy, a gateway); without it such a --http_listen is refused");
ABSL_FLAG(std::string, served_model_name, nanoserve::DecodeOptions().served_model_name,
          "the model's id in the HTTP API (empty: the --model value)");
NANOSERVE_FLAG_IN_RANGE(liveness_stall_s, nanoserve::DecodeOptions().liveness_stall_s, 1, 86400,
                        "GET /livez on the metrics port fails (503) once the scheduler loop has "
                        "been this many seconds on one turn (wedged): the liveness probe");
NANOSERVE_FLAG_IN_RANGE(slow_turn_ms, nanoserve::DecodeOptions().slow_turn_ms, 0, 86400000,
                        "log a scheduler turn longer than this many milliseconds with where its "
                        "time went (admitting, the callbacks, the step, prefill); 0 = never");
ABSL_FLAG(std::string, decode_step, nanoserve::DecodeOptions().decode_step,
          "auto (cuda-graph on a GPU, else reference), reference, cuda-graph, "
          "cuda-graph-matvec, cuda-graph-matvec-ln or cuda-graph-eager-prefill (prefill's "
          "eager passes, not its CUDA graphs)");

namespace nanoserve {

DecodeOptions DecodeOptionsFromFlags() {
  DecodeOptions options;
  options.service = ServiceOptionsFromFlags();
  options.store = StoreClientOptionsFromFlags();
  options.prefill = absl::GetFlag(FLAGS_prefill);
  options.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.max_context = absl::GetFlag(FLAGS_max_context);
  options.kv_pool_tokens = absl::GetFlag(FLAGS_kv_pool_tokens);
  options.kv_page_size = absl::GetFlag(FLAGS_kv_page_size);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.max_tokens_in_flight = absl::GetFlag(FLAGS_max_tokens_in_flight);
  options.max_tokens_in_flight_per_caller = absl::GetFlag(FLAGS_max_tokens_in_flight_per_caller);
  options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  options.prefill_timeout_ms = absl::GetFlag(FLAGS_prefill_timeout_ms);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.http_listen = absl::GetFlag(FLAGS_http_listen);
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  options.http_max_body_kb = absl::GetFlag(FLAGS_http_max_body_kb);
  options.http_timeout_s = absl::GetFlag(FLAGS_http_timeout_s);
  options.api_key = absl::GetFlag(FLAGS_api_key);
  options.allow_insecure_http = absl::GetFlag(FLAGS_allow_insecure_http);
  options.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  options.liveness_stall_s = absl::GetFlag(FLAGS_liveness_stall_s);
  options.slow_turn_ms = absl::GetFlag(FLAGS_slow_turn_ms);
  options.decode_step = absl::GetFlag(FLAGS_decode_step);
  return options;
}

absl::Status CheckDecodeOptions(const DecodeOptions& options) {
  if (options.http_listen.empty()) return absl::OkStatus();
  if (absl::Status bad = ValidateAddress(options.http_listen); !bad.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--http_listen: ", bad.message()));
  }
  return CheckHttpGuard(OpenAiServerOptionsFor(options));
}

absl::Status CheckDecodeMemory(const DecodeOptions& options) {
  auto config = ModelConfigFor(options.service.model);
  if (!config.ok()) return config.status();
  auto model = ModelOptionsFor(options.service.model);
  if (!model.ok()) return model.status();
  auto available = AvailableMemory(model->device);
  if (!available.ok()) return absl::OkStatus();  // cannot tell: let the allocation say
  const int64_t context = options.max_context > 0
                              ? std::min(options.max_context, config->n_positions)
                              : config->n_positions;
  const int64_t pool_tokens =
      options.kv_pool_tokens > 0 ? options.kv_pool_tokens : options.max_batch * context;
  const int64_t weights = WeightBytes(*config, model->dtype);
  const int64_t kv = pool_tokens * KvBytesPerToken(*config, model->dtype);
  return CheckFits(weights + kv, *available, model->device,
                   absl::StrCat("the weights (", weights >> 20, " MiB) and a KV pool of ",
                                pool_tokens, " tokens (", kv >> 20, " MiB)"),
                   "lower --max_batch or --max_context, or set a smaller --kv_pool_tokens");
}

absl::StatusOr<BatchSchedulerOptions> BatchSchedulerOptionsFor(const DecodeOptions& options) {
  absl::StatusOr<DecodeKind> decode = ParseDecodeKind(options.decode_step);
  if (!decode.ok()) return decode.status();
  BatchSchedulerOptions scheduler;
  scheduler.max_batch = options.max_batch;
  scheduler.capacity = options.max_context;
  scheduler.pool_tokens = options.kv_pool_tokens;
  scheduler.page_size = options.kv_page_size;
  scheduler.max_queue = options.max_queue;
  scheduler.prefill_chunk = options.prefill_chunk;
  scheduler.slow_turn_ms = options.slow_turn_ms;
  scheduler.decode = *decode;
  return scheduler;
}

DecodeStageOptions DecodeStageOptionsFor(const DecodeOptions& options) {
  DecodeStageOptions stage;
  stage.max_tokens_in_flight = options.max_tokens_in_flight;
  stage.max_tokens_in_flight_per_caller = options.max_tokens_in_flight_per_caller;
  return stage;
}

OpenAiServerOptions OpenAiServerOptionsFor(const DecodeOptions& options) {
  OpenAiServerOptions http;
  http.listen = options.http_listen;
  http.api_key = options.api_key;
  if (const char* env = std::getenv("NANOSERVE_API_KEY"); http.api_key.empty() && env != nullptr) {
    http.api_key = env;
  }
  http.allow_insecure = options.allow_insecure_http;
  http.model_id = options.served_model_name.empty() ? ModelSpecFor(options.service.model)
                                                    : options.served_model_name;
  http.http.threads = static_cast<int>(options.http_threads);
  http.http.max_body_bytes = options.http_max_body_kb << 10;
  http.http.max_connections = static_cast<int>(options.http_max_connections);
  http.http.request_timeout = absl::Seconds(10);
  http.http.idle_timeout = absl::Seconds(15);
  http.timeout = absl::Seconds(options.http_timeout_s);
  return http;
}

ServerOptions DecodeServerOptionsFor(const DecodeOptions& options, const BatchScheduler* scheduler,
                                     DecodeStage* stage, OpenAiServer* openai) {
  ServerOptions server = ServerOptionsFor(options.service);
  if (!options.http_listen.empty()) server.side_servers.push_back(openai);
  server.liveness = [scheduler, stall = absl::Seconds(options.liveness_stall_s)] {
    return SchedulerLiveness(*scheduler, stall);
  };
  server.end_unfinished = [stage, grace = server.shutdown_grace] {
    stage->EndAll(absl::UnavailableError(absl::StrCat(
        "nanoserve-decode is shutting down: its grace period of ", absl::FormatDuration(grace),
        " (--shutdown_grace_s) ran out before this call finished; retry it (another replica "
        "serves it)")));
  };
  return server;
}

}  // namespace nanoserve
