#include "options/decode_options.h"

#include "base/server_runner.h"

namespace nanoserve {

ServiceInfo DecodeOptions::Info() {
  return {"nanoserve-decode", "127.0.0.1:50053", "127.0.0.1:9153", ""};
}

std::string DecodeOptions::DefaultHttpListen() { return WithDefaultListenHost("127.0.0.1:8000"); }

std::vector<std::string> DecodeOptions::ToArgv() const {
  std::vector<std::string> argv = service.ToArgv();
  AppendArgv(store.ToArgv(), &argv);
  AppendArgv({FlagArg("prefill", prefill),
              FlagArg("max_batch", max_batch),
              FlagArg("max_context", max_context),
              FlagArg("kv_pool_tokens", kv_pool_tokens),
              FlagArg("kv_page_size", kv_page_size),
              FlagArg("max_queue", max_queue),
              FlagArg("max_tokens_in_flight", max_tokens_in_flight),
              FlagArg("max_tokens_in_flight_per_caller", max_tokens_in_flight_per_caller),
              FlagArg("prefill_chunk", prefill_chunk),
              FlagArg("prefill_timeout_ms", prefill_timeout_ms),
              FlagArg("workers", workers),
              FlagArg("http_listen", http_listen),
              FlagArg("http_threads", http_threads),
              FlagArg("http_max_connections", http_max_connections),
              FlagArg("http_max_body_kb", http_max_body_kb),
              FlagArg("http_timeout_s", http_timeout_s),
              FlagArg("api_key", api_key),
              FlagArg("allow_insecure_http", allow_insecure_http),
              FlagArg("served_model_name", served_model_name),
              FlagArg("liveness_stall_s", liveness_stall_s),
              FlagArg("slow_turn_ms", slow_turn_ms),
              FlagArg("decode_step", decode_step)},
             &argv);
  return argv;
}

}  // namespace nanoserve
