// nanoserve-decode: the front door; Generate streams tokens, decoded with continuous batching.
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/flag_range.h"
#include "decode_service/decode_handler.h"
#include "decode_service/decode_service.h"
#include "decode_service/openai_server.h"
#include "engine/device.h"
#include "kv_store/client/store_client_flags.h"
#include "prefill_service/prefill_client.h"
#include "rpc/service_main.h"

ABSL_FLAG(std::string, prefill, "127.0.0.1:50052", "prefill address; empty = compute here");
NANOSERVE_FLAG_IN_RANGE(max_batch, 16, 1, 4096, "sequences decoded together (KV cache slots)");
NANOSERVE_FLAG_IN_RANGE(max_context, 0, 0, 1048576, "tokens per slot (0 = the model's context)");
NANOSERVE_FLAG_IN_RANGE(kv_pool_tokens, 0, 0, 2147483648,
                        "tokens the KV page pool holds over all slots (0 = max_batch x "
                        "max_context); a request waits for the pages of its whole sequence");
NANOSERVE_FLAG_IN_RANGE(kv_page_size, 16, 1, 65536, "tokens per page of the KV pool");
NANOSERVE_FLAG_IN_RANGE(max_queue, 256, 0, 1048576, "calls waiting for a slot, at most");
NANOSERVE_FLAG_IN_RANGE(max_tokens_in_flight, 0, 0, 1099511627776,
                        "tokens of work admitted at once, prompts + max_tokens over every call "
                        "(0 = 4 x max_batch x the context); beyond: RESOURCE_EXHAUSTED / 429");
NANOSERVE_FLAG_IN_RANGE(prefill_chunk, 0, 0, 1048576, "prompt tokens per pass here (0 = all)");
NANOSERVE_FLAG_IN_RANGE(prefill_timeout_ms, 10000, 1, 86400000,
                        "deadline of the Prefill call (then decode computes the prompt itself; "
                        "3 in a row open a breaker: prefill is skipped for 5 s, then probed)");
NANOSERVE_FLAG_IN_RANGE(workers, 64, 1, 1024,
                        "threads for the calls' blocking steps (the Prefill call, the page read): "
                        "at most this many prompts are in prefill at once");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:8000",
          "OpenAI-compatible HTTP API (/v1/completions, /v1/models, /health), host:port "
          "(port 0 = any; host as --listen's: $NANOSERVE_LISTEN_HOST where set); empty = off; "
          "plaintext even with --tls_cert");
NANOSERVE_FLAG_IN_RANGE(http_threads, 2, 1, 64,
                        "HTTP event loop threads (each holds its share of the connections)");
NANOSERVE_FLAG_IN_RANGE(http_max_connections, 4096, 1, 1048576,
                        "HTTP connections open at once; a request beyond them gets 503");
NANOSERVE_FLAG_IN_RANGE(http_max_body_kb, 1024, 1, 1048576, "largest HTTP request body in KiB");
NANOSERVE_FLAG_IN_RANGE(http_timeout_s, 600, 1, 86400, "deadline of each HTTP completion");
ABSL_FLAG(std::string, served_model_name, "",
          "the model's id in the HTTP API (empty: the --model value)");
NANOSERVE_FLAG_IN_RANGE(liveness_stall_s, 120, 1, 86400,
                        "GET /livez on the metrics port fails (503) once the scheduler loop has "
                        "been this many seconds on one turn (wedged): the liveness probe");
ABSL_FLAG(std::string, decode_step, "auto",
          "auto (cuda-graph on a GPU, else reference), reference or cuda-graph");

namespace nanoserve {
namespace {

int Run() {
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ServiceError(loaded.status());
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return ServiceError(tokenizer.status());
  std::unique_ptr<v1::Prefill::Stub> prefill = PeerStub<v1::Prefill>(absl::GetFlag(FLAGS_prefill));
  auto remote = RemoteStoreFromFlags();
  if (!remote.ok()) return ServiceError(remote.status());
  RemoteStore store = *std::move(remote);
  PrefillClient prefill_client(prefill.get(), store.store.get(),
                               absl::Milliseconds(absl::GetFlag(FLAGS_prefill_timeout_ms)));
  BatchSchedulerOptions scheduler_options;
  scheduler_options.max_batch = absl::GetFlag(FLAGS_max_batch);
  scheduler_options.capacity = absl::GetFlag(FLAGS_max_context);
  scheduler_options.pool_tokens = absl::GetFlag(FLAGS_kv_pool_tokens);
  scheduler_options.page_size = absl::GetFlag(FLAGS_kv_page_size);
  scheduler_options.max_queue = absl::GetFlag(FLAGS_max_queue);
  scheduler_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  auto decode = ParseDecodeKind(absl::GetFlag(FLAGS_decode_step));
  if (!decode.ok()) return ServiceError(decode.status());
  scheduler_options.decode = *decode;
  auto created = BatchScheduler::Create(loaded->model.get(), scheduler_options);
  if (!created.ok()) return ServiceError(created.status());
  BatchScheduler& scheduler = **created;
  auto workers = std::make_unique<WorkerPool>(static_cast<int>(absl::GetFlag(FLAGS_workers)));
  MetricsRegistry metrics;
  DecodeStageOptions stage_options;
  stage_options.max_tokens_in_flight = absl::GetFlag(FLAGS_max_tokens_in_flight);
  DecodeStage stage(tokenizer->get(), &scheduler, prefill != nullptr ? &prefill_client : nullptr,
                    store.store.get(), workers.get(), stage_options, &metrics);
  DecodeHandler handler(&stage);
  DecodeService service(&handler);
  ServerOptions server = ServerOptionsFromFlags();
  OpenAiServerOptions http;
  http.listen = absl::GetFlag(FLAGS_http_listen);
  http.model_id = absl::GetFlag(FLAGS_served_model_name);
  if (http.model_id.empty()) http.model_id = ModelSpecFromFlags();
  http.http.threads = static_cast<int>(absl::GetFlag(FLAGS_http_threads));
  http.http.max_body_bytes = absl::GetFlag(FLAGS_http_max_body_kb) << 10;
  http.http.max_connections = static_cast<int>(absl::GetFlag(FLAGS_http_max_connections));
  http.http.request_timeout = absl::Seconds(10);
  http.http.idle_timeout = absl::Seconds(15);
  http.timeout = absl::Seconds(absl::GetFlag(FLAGS_http_timeout_s));
  OpenAiServer openai(&stage, http, &metrics);
  if (!http.listen.empty()) server.side_servers.push_back(&openai);
  server.liveness = [&scheduler, stall = absl::Seconds(absl::GetFlag(FLAGS_liveness_stall_s))] {
    return SchedulerLiveness(scheduler, stall);
  };
  // Streams the grace period cannot finish end with UNAVAILABLE (gRPC; an
  // SSE error event then [DONE] over HTTP): a client retries elsewhere.
  server.end_unfinished = [&stage, grace = server.shutdown_grace] {
    stage.EndAll(absl::UnavailableError(absl::StrCat(
        "nanoserve-decode is shutting down: its grace period of ", absl::FormatDuration(grace),
        " (--shutdown_grace_s) ran out before this call finished; retry it (another replica "
        "serves it)")));
  };
  absl::Status served = ServeUntilSignal(server, {&service}, &metrics);
  // End the calls the grace period cancelled, then let queued lease releases run.
  scheduler.Shutdown();
  workers.reset();
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  absl::SetFlag(&FLAGS_http_listen, nanoserve::WithDefaultListenHost("127.0.0.1:8000"));
  nanoserve::InitService(argc, argv, {"nanoserve-decode", "127.0.0.1:50053", "127.0.0.1:9153"});
  if (const std::string http = absl::GetFlag(FLAGS_http_listen); !http.empty()) {
    if (absl::Status bad = nanoserve::ValidateAddress(http); !bad.ok()) {
      return nanoserve::ServiceError(
          absl::InvalidArgumentError(absl::StrCat("--http_listen: ", bad.message())));
    }
  }
  return nanoserve::Run();
}
