#include "cli/serve_main.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/generate_main.h"
#include "cli/remote_commands.h"
#include "client/mps_daemon.h"
#include "client/subprocess.h"
#include "options/kv_store_options.h"

ABSL_FLAG(int32_t, kv_store_port, 50051, "serve: KV store port (0 = any free one)");
ABSL_FLAG(int32_t, prefill_port, 50052, "serve: prefill port (0 = any free one)");
ABSL_FLAG(int32_t, decode_port, 50053, "serve/bench-services: decode port (0 = any free one)");
ABSL_FLAG(int32_t, http_port, 8000,
          "serve: decode's OpenAI-compatible HTTP port on 127.0.0.1 (0 = any free one, -1 = off)");
ABSL_FLAG(bool, allow_insecure_http, false,
          "serve: let decode's HTTP API listen beyond loopback ($NANOSERVE_LISTEN_HOST, the "
          "images' 0.0.0.0) without an API key; decode refuses that otherwise. A key in "
          "$NANOSERVE_API_KEY reaches decode through the environment");
ABSL_FLAG(std::string, work_dir, "/tmp",
          "serve/bench-services: where service logs and port files go");
ABSL_FLAG(int64_t, pool_mb, 1024, "serve/bench-services: KV store pool budget in MiB");
ABSL_FLAG(std::string, kv_transport, "auto",
          "serve/bench-services: how prefill and decode move pages to and from the store: auto "
          "(its pool mapped in place: shared memory or CUDA IPC), cuda_ipc, shm or bytes");
ABSL_FLAG(int64_t, max_batch, 16, "serve/bench-services: decode slots");
ABSL_FLAG(std::string, mps, "auto",
          "serve: NVIDIA MPS for the three services on one GPU, so that prefill's and decode's "
          "kernels share the card instead of taking turns: auto (a daemon of serve's own under "
          "--work_dir when --device is cuda and nvidia-cuda-mps-control is on PATH; else none), "
          "on (the same, or an error) or off");
ABSL_FLAG(std::string, mps_prefill_priority, "normal",
          "serve: under serve's own MPS daemon, prefill's client priority against decode's "
          "(CUDA_MPS_CLIENT_PRIORITY): normal or below_normal (decode's steps first)");
ABSL_FLAG(int32_t, mps_prefill_sm_percent, 100,
          "serve: under serve's own MPS daemon, the share of the GPU's SMs prefill's kernels may "
          "take (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), 1..100, so that decode's steps find SMs free "
          "while prefill's passes run");
ABSL_FLAG(int64_t, slow_turn_ms, 0,
          "serve: decode logs a scheduler turn, and prefill a batch, longer than this many "
          "milliseconds with where its time went (nanoserve-decode --slow_turn_ms, "
          "nanoserve-prefill --slow_batch_ms); 0 = never");
ABSL_FLAG(std::string, snapshot_dir, nanoserve::KvStoreOptions().snapshot_dir,
          "serve: the KV store's warm restarts: it saves its cached prefixes here when serve "
          "stops and loads them when the next serve starts (nanoserve-kv-store "
          "--snapshot_dir). Empty: off");

namespace nanoserve {

ServiceStackOptions ServiceStackOptionsFromFlags(const GenerateCommandOptions& o) {
  ServiceStackOptions stack;
  stack.bin_dir = ExecutableDir();
  stack.work_dir = absl::GetFlag(FLAGS_work_dir);
  stack.model.spec = o.model;
  stack.model.seed = o.seed;
  stack.model.device = o.device;
  stack.model.dtype = o.dtype;
  stack.model.attention = o.attention;
  stack.kv_store.page_size = o.page_size;
  stack.kv_store.pool_mb = absl::GetFlag(FLAGS_pool_mb);
  stack.prefill.prefill_chunk = o.generate.prefill_chunk;
  stack.prefill.store.kv_transport = absl::GetFlag(FLAGS_kv_transport);
  stack.decode.store.kv_transport = absl::GetFlag(FLAGS_kv_transport);
  stack.decode.kv_page_size = o.page_size;
  stack.decode.max_batch = absl::GetFlag(FLAGS_max_batch);
  stack.decode.prefill_chunk = o.generate.prefill_chunk;
  stack.decode.decode_step = absl::GetFlag(FLAGS_decode_step);
  stack.decode.slow_turn_ms = absl::GetFlag(FLAGS_slow_turn_ms);
  stack.prefill.slow_batch_ms = absl::GetFlag(FLAGS_slow_turn_ms);
  return stack;
}

int ServeMain(const CommandContext&) {
  absl::StatusOr<GenerateCommandOptions> o = GenerateCommandOptionsFromFlags();
  if (!o.ok()) return CommandError(o.status(), 2);
  ServiceStackOptions stack = ServiceStackOptionsFromFlags(*o);
  stack.kv_store_port = absl::GetFlag(FLAGS_kv_store_port);
  stack.prefill_port = absl::GetFlag(FLAGS_prefill_port);
  stack.decode_port = absl::GetFlag(FLAGS_decode_port);
  stack.http_port = absl::GetFlag(FLAGS_http_port);
  stack.decode.allow_insecure_http = absl::GetFlag(FLAGS_allow_insecure_http);
  stack.kv_store.snapshot_dir = absl::GetFlag(FLAGS_snapshot_dir);
  absl::StatusOr<MpsMode> mps_mode = ParseMpsMode(absl::GetFlag(FLAGS_mps));
  if (!mps_mode.ok()) return CommandError(mps_mode.status(), 2);
  absl::StatusOr<MpsPriority> prefill_priority =
      ParseMpsPriority(absl::GetFlag(FLAGS_mps_prefill_priority));
  if (!prefill_priority.ok()) return CommandError(prefill_priority.status(), 2);
  absl::StatusOr<std::vector<std::string>> prefill_sm_share =
      MpsSmShareEnv(absl::GetFlag(FLAGS_mps_prefill_sm_percent));
  if (!prefill_sm_share.ok()) return CommandError(prefill_sm_share.status(), 2);
  std::unique_ptr<MpsDaemon> mps;  // quits after the services stopped
  if (*mps_mode != MpsMode::kOff && absl::StartsWith(o->device, "cuda")) {
    absl::StatusOr<std::unique_ptr<MpsDaemon>> started = MpsDaemon::Start(stack.work_dir);
    if (started.ok()) {
      mps = *std::move(started);
      stack.prefill_env.push_back(MpsClientPriorityEnv(*prefill_priority));
      stack.prefill_env.insert(stack.prefill_env.end(), prefill_sm_share->begin(),
                               prefill_sm_share->end());
      std::fprintf(stderr,
                   "nanoserve serve: an MPS daemon of its own for the GPU (%s); prefill's "
                   "priority %s, %d%% of the SMs\n",
                   mps->pipe_dir().c_str(), absl::GetFlag(FLAGS_mps_prefill_priority).c_str(),
                   absl::GetFlag(FLAGS_mps_prefill_sm_percent));
    } else if (*mps_mode == MpsMode::kOn) {
      return CommandError(started.status(), 2);
    } else if (std::getenv("CUDA_MPS_PIPE_DIRECTORY") != nullptr) {
      std::fprintf(stderr, "nanoserve serve: the services use the MPS daemon at %s\n",
                   std::getenv("CUDA_MPS_PIPE_DIRECTORY"));
    } else {
      std::fprintf(stderr, "nanoserve serve: no MPS (%s): the services take turns on the GPU\n",
                   std::string(started.status().message()).c_str());
    }
  }
  return RunServe(stack, *o, *mps_mode == MpsMode::kAuto ? &mps : nullptr);
}

}  // namespace nanoserve
