#include "cli/cli_flags.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "base/tls.h"
#include "engine/model_loader.h"

ABSL_FLAG(std::string, model, "",
          "checkpoint dir, .safetensors file, or random:gpt2|gpt2-medium|gpt2-large|gpt2-xl "
          "(default: $NANOSERVE_MODEL, ./models/gpt2, else random:gpt2); load --http: the model "
          "name to ask for (default: the first of GET /v1/models)");
ABSL_FLAG(std::string, prompts_file, "",
          "a batch: one prompt per line, or a JSON array of strings; load: one request per line, "
          "text or JSON {\"prompt\": text or ids, \"max_tokens\": N}");
ABSL_FLAG(std::string, attention, "naive", "naive or fused");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, dtype, "fp32", "fp32, bf16 or fp16");
ABSL_FLAG(uint64_t, seed, 0, "seed for sampling and random weights");
ABSL_FLAG(int64_t, page_size, 16, "prefix cache page size in tokens");
ABSL_FLAG(std::string, decode_step, "auto",
          "the decode step: auto (cuda-graph on a GPU, else reference), reference, cuda-graph "
          "cuda-graph-matvec (products of batches <= 8 in the split-K kernel) or "
          "cuda-graph-matvec-ln (and the LayerNorms folded into them) or "
          "cuda-graph-eager-prefill (prefill's eager passes, not its CUDA graphs) or "
          "cuda-graph-cascade (rows sharing leading pages attend them once, as a group); "
          "bench-decode: a comma list");
ABSL_FLAG(int64_t, repeats, 3, "bench, bench-services: timed runs per point (the median is kept)");
ABSL_FLAG(std::string, card, "", "bench: the machine's name in the CSV (default: from /proc)");
ABSL_FLAG(std::string, out, "", "bench: CSV path; export-hf: checkpoint directory");
ABSL_FLAG(std::string, target, "",
          "generate, load: a decode service (host:port; load --http: its HTTP API); stats: a KV "
          "store");
ABSL_FLAG(std::string, cache_salt, "",
          "generate --target, load: the cache namespace (tenant); prefixes are reused only within "
          "it (load: default a fresh one per run)");
ABSL_FLAG(std::string, tls_cert, "",
          "generate/stats/health --target: PEM client certificate for a service with mutual TLS "
          "(with --tls_key and --tls_ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle the service's certificate must chain to");
ABSL_FLAG(int64_t, timeout_s, 600,
          "generate --target: deadline of the call; load: of each request; health: how long to "
          "wait (seconds)");

namespace nanoserve {

std::string ModelFlagOrDefault() {
  const std::string model = absl::GetFlag(FLAGS_model);
  return model.empty() ? DefaultModelSpec() : model;
}

absl::StatusOr<CommandContext> CommandContextFromFlags() {
  TlsOptions tls;
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  absl::StatusOr<TransportCredentials> credentials = LoadTransportCredentials(tls);
  if (!credentials.ok()) return credentials.status();
  CommandContext context;
  context.credentials = credentials->channel;
  return context;
}

int CommandError(const absl::Status& status, int exit_code) {
  std::fprintf(stderr, "nanoserve: %s\n", status.ToString().c_str());
  return exit_code;
}

}  // namespace nanoserve
