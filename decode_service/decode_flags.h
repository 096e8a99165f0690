// nanoserve-decode's own flags, defined in decode_flags.cc (link it only into
// the binary, and into the test that round-trips them): --prefill, the batch
// scheduler's (--max_batch, --max_context, --kv_pool_tokens, --kv_page_size,
// --max_queue, --prefill_chunk, --decode_step), --max_tokens_in_flight,
// --max_tokens_in_flight_per_caller, --prefill_timeout_ms, --workers,
// --liveness_stall_s and the HTTP API's (--http_listen, --http_threads,
// --http_max_connections, --http_max_body_kb, --http_timeout_s, --api_key,
// --allow_insecure_http, --served_model_name). DecodeOptions
// (options/decode_options.h) documents each. Also what the binary builds from
// them.
//
// Thread safety: call after InitService (rpc/service_main.h).
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_FLAGS_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_FLAGS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/server_runner.h"
#include "decode_service/decode_stage.h"
#include "decode_service/openai_server.h"
#include "engine/batch_scheduler.h"
#include "options/decode_options.h"

namespace nanoserve {

// Every flag nanoserve-decode takes, as parsed: the shared ones
// (rpc/service_main.h), the store client's
// (kv_store/client/store_client_flags.h) and its own.
DecodeOptions DecodeOptionsFromFlags();

// INVALID_ARGUMENT naming --http_listen when it is set and no address
// (checked before anything starts, as InitService checks --listen);
// FAILED_PRECONDITION when it listens beyond loopback with no API key and no
// --allow_insecure_http (CheckHttpGuard).
absl::Status CheckDecodeOptions(const DecodeOptions& options);

// RESOURCE_EXHAUSTED when the weights and the KV pool that --max_batch,
// --max_context and --kv_pool_tokens ask for do not fit the device's free
// memory (engine/memory_budget.h), checked before anything is loaded (the
// issue's --max_batch 1024 aborted); OK where the free memory cannot be read.
// Errors of reading the model's config pass through.
absl::Status CheckDecodeMemory(const DecodeOptions& options);

// The batch scheduler's options in `options`. INVALID_ARGUMENT for a
// --decode_step that is not one of the choices.
absl::StatusOr<BatchSchedulerOptions> BatchSchedulerOptionsFor(const DecodeOptions& options);

// The decode stage's options in `options`: --max_tokens_in_flight and
// --max_tokens_in_flight_per_caller.
DecodeStageOptions DecodeStageOptionsFor(const DecodeOptions& options);

// The HTTP API's options in `options`; the model's id is --served_model_name,
// else the model's spec (ModelSpecFor); the API key is --api_key, else
// $NANOSERVE_API_KEY where set.
OpenAiServerOptions OpenAiServerOptionsFor(const DecodeOptions& options);

// nanoserve-decode's server: ServerOptionsFor(options.service) with `openai`
// as a side server when --http_listen is set, /livez failing once
// `scheduler`'s loop has spent --liveness_stall_s on one turn, and the calls
// the grace period cannot finish ended through `stage` with UNAVAILABLE (an
// SSE error event then [DONE] over HTTP), so a client retries elsewhere.
// The pointers are not owned and must outlive the server.
ServerOptions DecodeServerOptionsFor(const DecodeOptions& options, const BatchScheduler* scheduler,
                                     DecodeStage* stage, OpenAiServer* openai);

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_FLAGS_H_
