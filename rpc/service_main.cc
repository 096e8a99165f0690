#include "rpc/service_main.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "base/flag_range.h"
#include "engine/model_fingerprint.h"

// The server. The addresses' defaults are set per service by InitService.
ABSL_FLAG(std::string, listen, "",
          "gRPC address, host:port (port 0 = any); by default the service's own: kv store "
          "127.0.0.1:50051, prefill 127.0.0.1:50052, decode 127.0.0.1:50053, with the host "
          "$NANOSERVE_LISTEN_HOST instead of 127.0.0.1 where that is set (0.0.0.0 in the images)");
ABSL_FLAG(std::string, metrics_listen, "",
          "Prometheus /metrics address, host:port; empty = off; by default the service's own: "
          "kv store 127.0.0.1:9151, prefill 127.0.0.1:9152, decode 127.0.0.1:9153 (host: as "
          "--listen's)");
ABSL_FLAG(std::string, port_file, "", "write the gRPC and metrics ports here once serving");
NANOSERVE_FLAG_IN_RANGE(max_message_mb, nanoserve::ServiceOptions().max_message_mb, 1, 2047,
                        "largest gRPC message in MiB");
NANOSERVE_FLAG_IN_RANGE(shutdown_grace_s, nanoserve::ServiceOptions().shutdown_grace_s, 0, 3600,
                        "after SIGTERM, seconds that calls in flight (streams) may take to "
                        "finish before they are cancelled");
// Mutual TLS (base/tls.h): all three or none.
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this service, for its server and its channels to peers; "
          "with --tls_key and --tls_ca (none: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle: callers and peers must present a certificate it signed");
// The model. Prefill and decode must be given the same --model and --seed.
ABSL_FLAG(std::string, model, "",
          "checkpoint dir, .safetensors file or random:<preset>; empty: $NANOSERVE_MODEL, "
          "./models/gpt2, else random:gpt2 (the KV store reads only its shape and fingerprint)");
ABSL_FLAG(
    uint64_t, seed, nanoserve::ServiceModel().seed,
    "seed of random weights, the same for prefill and decode (the KV store names the model of "
    "its --snapshot_dir with it)");
ABSL_FLAG(std::string, device, nanoserve::ServiceModel().device,
          "cpu or cuda (the KV store's page pool lives there)");
ABSL_FLAG(std::string, dtype, nanoserve::ServiceModel().dtype,
          "fp32, bf16 or fp16 (the KV store's must match the engines')");
ABSL_FLAG(std::string, attention, nanoserve::ServiceModel().attention,
          "naive or fused (the KV store does not use it)");

namespace nanoserve {
namespace {

// Set once by InitService, before any thread starts; read-only after.
ServiceInfo& Info() {
  static ServiceInfo* info = new ServiceInfo();
  return *info;
}
TransportCredentials& Credentials() {
  static TransportCredentials* credentials = new TransportCredentials();
  return *credentials;
}

// The source files whose flags a service binary takes: its flag files
// (<service>_flags.cc, kv_store/client/store_client_flags.cc), the shared
// flags of rpc/service_main.cc, and its main.cc (which should define none:
// listed so that a flag defined there shows, and
// tests/integration/services_test.cc finds it). Not Abseil's own flags, e.g.
// --flagfile.
bool IsServiceFlagFile(absl::string_view file) {
  return absl::EndsWith(file, "_flags.cc") || absl::EndsWith(file, "rpc/service_main.cc") ||
         absl::EndsWith(file, "/main.cc");
}

// --help shows paths relative to the source tree.
std::string RelativeToSourceTree(absl::string_view file) {
  absl::ConsumePrefix(&file, NANOSERVE_SOURCE_DIR "/");
  return std::string(file);
}

}  // namespace

void InitService(int argc, char** argv, const ServiceInfo& info) {
  BlockTerminationSignals();
  Info() = info;
  absl::SetProgramUsageMessage(
      "serves until SIGTERM or SIGINT.\n\nA flag whose default this service sets shows it as "
      "'currently'.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = IsServiceFlagFile;
  usage.contains_helpshort_flags = IsServiceFlagFile;
  usage.normalize_filename = RelativeToSourceTree;
  absl::SetFlagsUsageConfig(usage);
  const ServiceOptions defaults(info);
  absl::SetFlag(&FLAGS_listen, defaults.listen);
  absl::SetFlag(&FLAGS_metrics_listen, defaults.metrics_listen);
  if (!defaults.model.spec.empty()) absl::SetFlag(&FLAGS_model, defaults.model.spec);
  absl::ParseCommandLine(argc, argv);
  if (absl::Status bad = CheckFlagRanges(); !bad.ok()) std::exit(ServiceError(bad));
  // Addresses before anything starts: a port out of range is refused, not
  // bound as another.
  for (const auto& [flag, address] :
       {std::pair<const char*, std::string>{"--listen", absl::GetFlag(FLAGS_listen)},
        {"--metrics_listen", absl::GetFlag(FLAGS_metrics_listen)}}) {
    if (address.empty()) continue;
    if (absl::Status bad = ValidateAddress(address); !bad.ok()) {
      std::exit(ServiceError(absl::InvalidArgumentError(absl::StrCat(flag, ": ", bad.message()))));
    }
  }
  TlsOptions tls;
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  absl::StatusOr<TransportCredentials> credentials = LoadTransportCredentials(tls);
  if (!credentials.ok()) std::exit(ServiceError(credentials.status()));
  Credentials() = *std::move(credentials);
}

const TransportCredentials& CredentialsFromFlags() { return Credentials(); }

ServiceOptions ServiceOptionsFromFlags() {
  ServiceOptions service;
  service.listen = absl::GetFlag(FLAGS_listen);
  service.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  service.port_file = absl::GetFlag(FLAGS_port_file);
  service.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  service.shutdown_grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  service.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  service.tls_key = absl::GetFlag(FLAGS_tls_key);
  service.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  service.model.spec = absl::GetFlag(FLAGS_model);
  service.model.seed = absl::GetFlag(FLAGS_seed);
  service.model.device = absl::GetFlag(FLAGS_device);
  service.model.dtype = absl::GetFlag(FLAGS_dtype);
  service.model.attention = absl::GetFlag(FLAGS_attention);
  return service;
}

ServerOptions ServerOptionsFor(const ServiceOptions& service) {
  ServerOptions server;
  server.name = Info().name;
  server.listen = service.listen;
  server.metrics_listen = service.metrics_listen;
  server.port_file = service.port_file;
  server.max_message_bytes = MaxMessageBytes(service);
  server.shutdown_grace = absl::Seconds(service.shutdown_grace_s);
  server.credentials = Credentials().server;
  return server;
}

int64_t MaxMessageBytes(const ServiceOptions& service) { return service.max_message_mb << 20; }

absl::StatusOr<ModelOptions> ModelOptionsFor(const ServiceModel& model) {
  return ParseModelOptions(model.device, model.dtype, model.attention);
}

std::string ModelSpecFor(const ServiceModel& model) {
  return model.spec.empty() ? DefaultModelSpec() : model.spec;
}

absl::StatusOr<Gpt2Config> ModelConfigFor(const ServiceModel& model) {
  return LoadModelConfig(ModelSpecFor(model));
}

std::string ModelIdentityFor(const ServiceModel& model) {
  absl::StatusOr<std::string> fingerprint = ModelFingerprint(ModelSpecFor(model), model.seed);
  if (fingerprint.ok()) return *std::move(fingerprint);
  std::fprintf(stderr, "%s: peers' models are not checked: %s\n", Info().name.c_str(),
               fingerprint.status().ToString().c_str());
  return "";
}

absl::StatusOr<LoadedModel> LoadServiceModel(const ServiceModel& model) {
  auto options = ModelOptionsFor(model);
  if (!options.ok()) return options.status();
  auto loaded = LoadModel(ModelSpecFor(model), *options, model.seed);
  if (!loaded.ok()) return loaded.status();
  std::fprintf(stderr, "%s: model %s\n", Info().name.c_str(), loaded->description.c_str());
  return loaded;
}

int ServiceError(const absl::Status& status, int exit_code) {
  std::fprintf(stderr, "%s: %s\n", Info().name.c_str(), status.ToString().c_str());
  return exit_code;
}

}  // namespace nanoserve
