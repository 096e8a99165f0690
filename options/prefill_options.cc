#include "options/prefill_options.h"

namespace nanoserve {

ServiceInfo PrefillOptions::Info() {
  return {"nanoserve-prefill", "127.0.0.1:50052", "127.0.0.1:9152", ""};
}

std::vector<std::string> PrefillOptions::ToArgv() const {
  std::vector<std::string> argv = service.ToArgv();
  AppendArgv(store.ToArgv(), &argv);
  AppendArgv({FlagArg("prefill_chunk", prefill_chunk), FlagArg("workers", workers),
              FlagArg("batch_window_ms", batch_window_ms), FlagArg("slow_batch_ms", slow_batch_ms),
              FlagArg("kept_rows_tokens", kept_rows_tokens),
              FlagArg("store_match_min_tokens", store_match_min_tokens)},
             &argv);
  return argv;
}

}  // namespace nanoserve
