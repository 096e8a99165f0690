// nanoserve-decode's command line as one struct (options/service_options.h
// says how the option structs and their flags fit): FromFlags in
// decode_service/decode_flags.h, ToArgv here.
#ifndef NANOSERVE_OPTIONS_DECODE_OPTIONS_H_
#define NANOSERVE_OPTIONS_DECODE_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "options/service_options.h"

namespace nanoserve {

struct DecodeOptions {
  // nanoserve-decode, 127.0.0.1:50053, metrics 127.0.0.1:9153.
  static ServiceInfo Info();
  // 127.0.0.1:8000 with the host DefaultListenHost(): --http_listen's default.
  static std::string DefaultHttpListen();

  ServiceOptions service{Info()};
  StoreClientOptions store;
  // --prefill: the prefill service's address; empty = compute prompts here.
  std::string prefill = "127.0.0.1:50052";
  int64_t max_batch = 16;   // --max_batch: sequences decoded together (KV cache slots)
  int64_t max_context = 0;  // --max_context: tokens per slot (0 = the model's context)
  // --kv_pool_tokens: tokens the KV page pool holds over all slots (0 =
  // max_batch x max_context); a request waits for the pages of its whole
  // sequence.
  int64_t kv_pool_tokens = 0;
  int64_t kv_page_size = 16;  // --kv_page_size: tokens per page of the KV pool
  int64_t max_queue = 256;    // --max_queue: calls waiting for a slot, at most
  // --max_tokens_in_flight: tokens of work admitted at once, prompts +
  // max_tokens over every call (0 = 4 x max_batch x the context); beyond:
  // RESOURCE_EXHAUSTED / 429.
  int64_t max_tokens_in_flight = 0;
  // --max_tokens_in_flight_per_caller: of those, what one caller (its TLS
  // identity, else its address; an HTTP client's address) may hold at once
  // (0 = half of max_tokens_in_flight); beyond: RESOURCE_EXHAUSTED / 429 for
  // that caller while others are still admitted.
  int64_t max_tokens_in_flight_per_caller = 0;
  // --prefill_chunk: when decode computes prompts itself, the prompt tokens
  // computed per scheduler turn over all of them, oldest first, after the
  // turn's decode step (0 = each prompt all at once when admitted).
  int64_t prefill_chunk = 0;
  // --prefill_timeout_ms: deadline of the Prefill call (then decode computes
  // the prompt itself; 3 in a row open a breaker).
  int64_t prefill_timeout_ms = 10000;
  // --workers: threads for the calls' blocking steps (waiting for the
  // Prefill call, the page read): each waits for one call's, and at most
  // this many more calls start theirs before a worker takes them.
  int64_t workers = 64;
  // --http_listen: the OpenAI-compatible HTTP API, host:port (port 0 = any);
  // empty = off; plaintext even with TLS.
  std::string http_listen = DefaultHttpListen();
  int64_t http_threads = 2;  // --http_threads: HTTP event loop threads
  // --http_max_connections: HTTP connections open at once; a request beyond
  // them gets 503.
  int64_t http_max_connections = 4096;
  int64_t http_max_body_kb = 1024;  // --http_max_body_kb: largest HTTP request body in KiB
  int64_t http_timeout_s = 600;     // --http_timeout_s: deadline of each HTTP completion
  // --api_key: the bearer token /v1/ requests of the HTTP API must send (401
  // otherwise; /health is open); empty: $NANOSERVE_API_KEY where set, else
  // none.
  std::string api_key;
  // --allow_insecure_http: let the HTTP API listen beyond loopback without an
  // API key (something else guards it); without it such an --http_listen is
  // refused.
  bool allow_insecure_http = false;
  // --served_model_name: the model's id in the HTTP API (empty: the --model
  // value).
  std::string served_model_name;
  // --liveness_stall_s: GET /livez fails once the scheduler loop has been
  // this many seconds on one turn (wedged).
  int64_t liveness_stall_s = 120;
  // --slow_turn_ms: a scheduler turn longer than this is logged with where
  // its time went (BatchSchedulerOptions::slow_turn_ms); 0 = never.
  int64_t slow_turn_ms = 0;
  // --decode_step: auto (cuda-graph on a GPU, else reference), reference,
  // cuda-graph, cuda-graph-matvec, cuda-graph-matvec-ln or
  // cuda-graph-eager-prefill.
  std::string decode_step = "auto";

  // Every flag: the service's, the store client's, then decode's own.
  std::vector<std::string> ToArgv() const;
};

}  // namespace nanoserve

#endif  // NANOSERVE_OPTIONS_DECODE_OPTIONS_H_
