#include "options/service_options.h"

#include "base/server_runner.h"

namespace nanoserve {

std::vector<std::string> ServiceModel::ToArgv() const {
  return {FlagArg("model", spec), FlagArg("seed", seed), FlagArg("device", device),
          FlagArg("dtype", dtype), FlagArg("attention", attention)};
}

ServiceOptions::ServiceOptions(const ServiceInfo& info)
    : listen(WithDefaultListenHost(info.listen)),
      metrics_listen(WithDefaultListenHost(info.metrics_listen)) {
  model.spec = info.model;
}

std::vector<std::string> ServiceOptions::ToArgv() const {
  std::vector<std::string> argv = {FlagArg("listen", listen),
                                   FlagArg("metrics_listen", metrics_listen),
                                   FlagArg("port_file", port_file),
                                   FlagArg("max_message_mb", max_message_mb),
                                   FlagArg("shutdown_grace_s", shutdown_grace_s),
                                   FlagArg("tls_cert", tls_cert),
                                   FlagArg("tls_key", tls_key),
                                   FlagArg("tls_ca", tls_ca)};
  AppendArgv(model.ToArgv(), &argv);
  return argv;
}

std::vector<std::string> StoreClientOptions::ToArgv() const {
  return {FlagArg("kv_store", kv_store), FlagArg("store_timeout_ms", store_timeout_ms),
          FlagArg("chunk_kb", chunk_kb), FlagArg("kv_transport", kv_transport)};
}

std::string FlagArg(absl::string_view name, bool value) {
  return absl::StrCat("--", name, "=", value ? "true" : "false");
}

void AppendArgv(const std::vector<std::string>& more, std::vector<std::string>* argv) {
  argv->insert(argv->end(), more.begin(), more.end());
}

}  // namespace nanoserve
