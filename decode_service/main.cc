// nanoserve-decode: the front door. Generate streams tokens; prompts go to
// the prefill service, their K/V comes from the KV store, and decoding runs
// with continuous batching.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "decode_service/decode_handler.h"
#include "kv_store/client/remote_prefix_store.h"
#include "prefill_service/prefill_client.h"
#include "decode_service/decode_service.h"
#include "engine/device.h"
#include "engine/model_loader.h"
#include "rpc/server_runner.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50053", "gRPC address (host:port; port 0 = any)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9153", "Prometheus /metrics address; empty = off");
ABSL_FLAG(std::string, port_file, "", "write the gRPC and metrics ports here once serving");
ABSL_FLAG(std::string, prefill, "127.0.0.1:50052", "prefill service address; empty = compute prompts here");
ABSL_FLAG(std::string, kv_store, "127.0.0.1:50051", "KV store address; empty = compute prompts here");
ABSL_FLAG(std::string, model, "", "checkpoint dir, .safetensors file or random:<preset> (default: $NANOSERVE_MODEL, ./models/gpt2, else random:gpt2)");
ABSL_FLAG(uint64_t, seed, 0, "seed of random weights (must match prefill's)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, dtype, "fp32", "fp32, bf16 or fp16");
ABSL_FLAG(std::string, attention, "naive", "naive or fused");
ABSL_FLAG(int64_t, max_batch, 16, "sequences decoded together (KV cache slots)");
ABSL_FLAG(int64_t, max_context, 0, "tokens per slot, prompt + output (0 = the model's context)");
ABSL_FLAG(int64_t, max_queue, 256, "requests waiting for a slot before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, prefill_chunk, 0, "prompt tokens per pass when decode computes a prompt (0 = all)");
ABSL_FLAG(int64_t, prefill_timeout_ms, 60000, "deadline of the Prefill call");
ABSL_FLAG(int64_t, store_timeout_ms, 10000, "deadline of each KV store call");
ABSL_FLAG(int64_t, max_message_mb, 8, "largest gRPC message in MiB");
ABSL_FLAG(int32_t, workers, 8, "threads for the blocking prefill/fetch steps of calls");

namespace nanoserve {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "nanoserve-decode: %s\n", status.ToString().c_str());
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
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::fprintf(stderr, "nanoserve-decode: model %s\n", loaded->description.c_str());

  const int64_t max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  std::unique_ptr<v1::Prefill::Stub> prefill;
  if (!absl::GetFlag(FLAGS_prefill).empty()) {
    prefill = v1::Prefill::NewStub(MakeChannel(absl::GetFlag(FLAGS_prefill), max_message_bytes));
  }
  std::unique_ptr<KvStoreClient> store_client;
  std::unique_ptr<RemotePrefixStore> store;
  if (!absl::GetFlag(FLAGS_kv_store).empty()) {
    KvStoreClientOptions o;
    o.target = absl::GetFlag(FLAGS_kv_store);
    o.max_message_bytes = max_message_bytes;
    o.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_store_timeout_ms));
    store_client = std::make_unique<KvStoreClient>(o);
    store = std::make_unique<RemotePrefixStore>(store_client.get());
  }
  std::unique_ptr<PrefillClient> prefill_client;
  if (prefill != nullptr) {
    prefill_client = std::make_unique<PrefillClient>(
        prefill.get(), store.get(), absl::Milliseconds(absl::GetFlag(FLAGS_prefill_timeout_ms)));
  }

  BatchSchedulerOptions scheduler_options;
  scheduler_options.max_batch = absl::GetFlag(FLAGS_max_batch);
  scheduler_options.capacity = absl::GetFlag(FLAGS_max_context);
  scheduler_options.max_queue = absl::GetFlag(FLAGS_max_queue);
  scheduler_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  scheduler_options.end_of_text_id = Gpt2Tokenizer::kEndOfText;
  BatchScheduler scheduler(loaded->model.get(), scheduler_options);
  auto workers = std::make_unique<WorkerPool>(absl::GetFlag(FLAGS_workers));
  MetricsRegistry metrics;
  DecodeStage stage(tokenizer->get(), &scheduler, prefill_client.get(), store.get(),
                    workers.get(), DecodeStageOptions(), &metrics);
  DecodeHandler handler(&stage);
  DecodeService service(&handler);

  ServerOptions server;
  server.name = "nanoserve-decode";
  server.listen = absl::GetFlag(FLAGS_listen);
  server.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  server.port_file = absl::GetFlag(FLAGS_port_file);
  server.max_message_bytes = max_message_bytes;
  absl::Status served = ServeUntilSignal(server, {&service}, &metrics);
  // Calls still running after the grace period were cancelled by the
  // server; end what remains, then let queued lease releases run.
  scheduler.Shutdown();
  workers.reset();
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
