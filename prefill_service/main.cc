// nanoserve-prefill: the prefill stage.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/device.h"
#include "engine/model_loader.h"
#include "kv_store/client/remote_prefix_store.h"
#include "prefill_service/prefill_handler.h"
#include "prefill_service/prefill_service.h"
#include "rpc/server_runner.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50052", "gRPC address (host:port; port 0 = any)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9152", "Prometheus /metrics address; empty = off");
ABSL_FLAG(std::string, port_file, "", "write the gRPC and metrics ports here once serving");
ABSL_FLAG(std::string, kv_store, "127.0.0.1:50051", "KV store address; empty = compute every prompt in full");
ABSL_FLAG(std::string, model, "", "checkpoint dir, .safetensors file or random:<preset> (default: $NANOSERVE_MODEL, ./models/gpt2, else random:gpt2)");
ABSL_FLAG(uint64_t, seed, 0, "seed of random weights");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, dtype, "fp32", "fp32, bf16 or fp16");
ABSL_FLAG(std::string, attention, "naive", "naive or fused");
ABSL_FLAG(int64_t, prefill_chunk, 0, "prompt tokens per forward pass (0 = all)");
ABSL_FLAG(int64_t, store_timeout_ms, 10000, "deadline of each KV store call");
ABSL_FLAG(int64_t, max_message_mb, 8, "largest gRPC message in MiB");
ABSL_FLAG(int64_t, chunk_kb, 1024, "page bytes per Put chunk in KiB");
ABSL_FLAG(int32_t, workers, 4, "threads serving calls (prompts are computed one at a time)");

namespace nanoserve {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "nanoserve-prefill: %s\n", status.ToString().c_str());
  return 2;
}

int Run() {
  auto parsed = ParseModelOptions(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype),
                                  absl::GetFlag(FLAGS_attention));
  if (!parsed.ok()) return Fail(parsed.status());
  const ModelOptions model_options = *parsed;
  std::string spec = absl::GetFlag(FLAGS_model);
  if (spec.empty()) spec = DefaultModelSpec();
  auto loaded = LoadModel(spec, model_options, absl::GetFlag(FLAGS_seed));
  if (!loaded.ok()) return Fail(loaded.status());
  std::fprintf(stderr, "nanoserve-prefill: model %s\n", loaded->description.c_str());

  const int64_t max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  std::unique_ptr<KvStoreClient> store_client;
  std::unique_ptr<RemotePrefixStore> store;
  if (!absl::GetFlag(FLAGS_kv_store).empty()) {
    KvStoreClientOptions o;
    o.target = absl::GetFlag(FLAGS_kv_store);
    o.max_message_bytes = max_message_bytes;
    o.chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
    o.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_store_timeout_ms));
    store_client = std::make_unique<KvStoreClient>(o);
    store = std::make_unique<RemotePrefixStore>(store_client.get());
  }
  MetricsRegistry metrics;
  PrefillStageOptions stage_options;
  stage_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  PrefillStage stage(loaded->model.get(), store.get(), stage_options, &metrics);
  PrefillHandler handler(&stage);
  WorkerPool workers(absl::GetFlag(FLAGS_workers));
  PrefillService service(&handler, &workers);

  ServerOptions server;
  server.name = "nanoserve-prefill";
  server.listen = absl::GetFlag(FLAGS_listen);
  server.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  server.port_file = absl::GetFlag(FLAGS_port_file);
  server.max_message_bytes = max_message_bytes;
  absl::Status served = ServeUntilSignal(server, {&service}, &metrics);
  if (!served.ok()) return Fail(served);
  return 0;
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::BlockTerminationSignals();
  absl::ParseCommandLine(argc, argv);
  return nanoserve::Run();
}
