// nanoserve: the command line. Subcommands:
//   tokenize --text T          prints the ids as a JSON array
//   detokenize --ids 1,2,3     prints the text
//   generate [flags]           runs the engine in this process and streams text
//   bench [flags]              the Parts A-C sweeps: CSV of every point + a table
//   export-hf --model M --out D  writes M as an HF checkpoint (for bench/hf_peer.py)
//   generate --target H:P      streams from a running decode service instead
//   stats --target H:P         prints a KV store's statistics as JSON
//   health --target H:P        exits 0 if the service answers SERVING (for probes)
//   (--target calls go over mutual TLS with --tls_cert, --tls_key, --tls_ca)
//   serve [flags]              starts kv store, prefill and decode on loopback
//   bench-services [flags]     offline engine vs services: TTFT, ms/token, KV handoff;
//                              --front_door: gRPC vs the OpenAI HTTP API
//   bench-decode [flags]       the decode step: reference vs CUDA graph, batch 1/8/64
//   load --target H:P [--http] [flags]  a load generator against a decode service:
//                              throughput, TTFT, TPOT, ITL, goodput; CSV; rate sweeps, plot
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/server_runner.h"
#include "base/tls.h"
#include "bench/decode_bench.h"
#include "bench/front_door_bench.h"
#include "bench/services_bench.h"
#include "cli/bench_command.h"
#include "cli/commands.h"
#include "cli/flag_names.h"
#include "cli/load_command.h"
#include "cli/remote_commands.h"
#include "client/subprocess.h"
#include "engine/device.h"
#include "engine/model_loader.h"

ABSL_FLAG(std::string, text, "", "tokenize: the text");
ABSL_FLAG(std::string, ids, "", "detokenize: comma-separated token ids");
ABSL_FLAG(std::string, model, "",
          "checkpoint dir, .safetensors file, or random:gpt2|gpt2-medium|gpt2-large|gpt2-xl "
          "(default: $NANOSERVE_MODEL, ./models/gpt2, else random:gpt2); load --http: the model "
          "name to ask for (default: the first of GET /v1/models)");
ABSL_FLAG(std::string, prompt, "", "the prompt text");
ABSL_FLAG(std::string, prompt_file, "", "read the prompt from this file");
ABSL_FLAG(std::string, prompts_file, "",
          "a batch: one prompt per line, or a JSON array of strings; load: one request per line, "
          "text or JSON {\"prompt\": text or ids, \"max_tokens\": N}");
ABSL_FLAG(int64_t, max_new_tokens, 32, "tokens to generate per prompt");
ABSL_FLAG(std::string, kv_cache, "on", "off (Part A), on (Part B) or prefix (Part C)");
ABSL_FLAG(std::string, attention, "naive", "naive or fused");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, dtype, "fp32", "fp32, bf16 or fp16");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy");
ABSL_FLAG(int64_t, top_k, 0, "keep the k most likely tokens (0 = all)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling threshold in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "seed for sampling and random weights");
ABSL_FLAG(int64_t, prefill_chunk, 0, "prefill at most this many tokens per pass (0 = all)");
ABSL_FLAG(int64_t, page_size, 16, "prefix cache page size in tokens");
ABSL_FLAG(int64_t, prefix_cache_mb, 512, "prefix cache pool budget in MiB");
ABSL_FLAG(int64_t, repeat, 1, "run the batch this many times in one process");
ABSL_FLAG(bool, cold_prefix_cache, false,
          "empty the prefix cache before each --repeat run (time a cold batch each time)");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after <|endoftext|>");
ABSL_FLAG(std::string, decode_step, "auto",
          "the decode step: auto (cuda-graph on a GPU, else reference), reference, cuda-graph "
          "or cuda-graph-matvec (products of batches <= 8 in the split-K kernel); "
          "bench-decode: a comma list");
ABSL_FLAG(bool, json, false, "print one JSON object instead of streaming text");
// bench (--model and --attention take comma lists there; ranges: a..b*factor, a..b+step)
ABSL_FLAG(std::string, sweeps, "prompt,output,prefix", "bench: sweeps to run");
ABSL_FLAG(std::string, prompt_lens, "8..1000*2", "bench: prompt lengths of the prompt sweep");
ABSL_FLAG(std::string, output_lens, "8..1000*2", "bench: output lengths of the output sweep");
ABSL_FLAG(int64_t, fixed_output, 16, "bench: output length of the prompt sweep");
ABSL_FLAG(int64_t, fixed_prompt, 16, "bench: prompt length of the output sweep");
ABSL_FLAG(std::string, shared_lens, "0,128,256,512,900",
          "bench: shared prefix lengths (prefix sweep)");
ABSL_FLAG(std::string, batch_sizes, "1,4,16", "bench: batch sizes (prefix sweep)");
ABSL_FLAG(int64_t, suffix_len, 32, "bench: tokens of each prompt after the shared prefix");
ABSL_FLAG(int64_t, prefix_output, 16, "bench: output length of the prefix sweep");
ABSL_FLAG(int64_t, repeats, 3, "bench, bench-services: timed runs per point (the median is kept)");
ABSL_FLAG(int64_t, warmup, 1, "bench: untimed short runs (<= 4 output tokens) per point first");
ABSL_FLAG(double, max_seconds, 0, "bench: skip points not started within this time (0 = no limit)");
ABSL_FLAG(bool, progress, true, "bench: progress bar on stderr");
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
ABSL_FLAG(int32_t, kv_store_port, 50051, "serve: KV store port (0 = any free one)");
ABSL_FLAG(int32_t, prefill_port, 50052, "serve: prefill port (0 = any free one)");
ABSL_FLAG(int32_t, decode_port, 50053, "serve/bench-services: decode port (0 = any free one)");
ABSL_FLAG(int32_t, http_port, 8000,
          "serve: decode's OpenAI-compatible HTTP port on 127.0.0.1 (0 = any free one, -1 = off)");
ABSL_FLAG(std::string, work_dir, "/tmp",
          "serve/bench-services: where service logs and port files go");
ABSL_FLAG(int64_t, pool_mb, 1024, "serve/bench-services: KV store pool budget in MiB");
ABSL_FLAG(std::string, kv_transport, "auto",
          "serve/bench-services: how prefill and decode move pages to and from the store: auto "
          "(its pool mapped in place: shared memory or CUDA IPC), cuda_ipc, shm or bytes");
ABSL_FLAG(int64_t, max_batch, 16, "serve/bench-services: decode slots");
ABSL_FLAG(std::string, prompt_lengths, "16,128,512", "bench-services: prompt lengths in tokens");
ABSL_FLAG(bool, front_door, false,
          "bench-services: decode's gRPC against its OpenAI HTTP API (client TTFT, ms/token)");
ABSL_FLAG(std::string, decode_batches, "1,8,64", "bench-decode: batch sizes");
ABSL_FLAG(int64_t, decode_prompt, 128, "bench-decode: prompt tokens per sequence");
ABSL_FLAG(int64_t, decode_output, 128, "bench-decode: new tokens per sequence");
ABSL_FLAG(bool, profile, false, "bench-decode: also where a cuda-graph step's time goes");
// load (--target, --model, --prompts_file, --seed, --timeout_s, --cache_salt and TLS too)
ABSL_FLAG(bool, http, false,
          "load: --target is decode's OpenAI-compatible HTTP API (streamed /v1/completions)");
ABSL_FLAG(int64_t, requests, 100, "load: requests per run");
ABSL_FLAG(double, rate, std::numeric_limits<double>::infinity(),
          "load: Poisson arrival rate in requests/s (inf = all at once)");
ABSL_FLAG(std::string, rates, "", "load: a sweep over rates, e.g. 1,2,4,inf (wins over --rate)");
ABSL_FLAG(int64_t, concurrency, 0, "load: most requests in flight (0 = no limit)");
ABSL_FLAG(std::string, prompt_len, "128", "load: prompt tokens, N or A:B (uniform)");
ABSL_FLAG(std::string, output_len, "128", "load: output tokens, N or A:B (uniform)");
ABSL_FLAG(int64_t, vocab_size, 50257, "load: synthetic prompts draw token ids below this");
ABSL_FLAG(int64_t, shared_prefix_len, 0, "load: tokens of the common prefix");
ABSL_FLAG(double, shared_prefix_share, 0, "load: share of requests with the common prefix, 0..1");
ABSL_FLAG(double, slo_ttft_ms, 0, "load: goodput's bound on time to first token (0 = none)");
ABSL_FLAG(double, slo_tpot_ms, 0, "load: goodput's bound on time per output token (0 = none)");
ABSL_FLAG(std::string, csv, "", "load: per-request CSV");
ABSL_FLAG(std::string, sweep_csv, "", "load: one CSV line per rate (default with --plot: PNG.csv)");
ABSL_FLAG(std::string, plot, "", "load: throughput-vs-latency PNG (gnuplot)");

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  absl::SetProgramUsageMessage(
      "nanoserve tokenize|detokenize|generate|bench|export-hf|stats|health|serve|bench-services|"
      "bench-decode|load "
      "[flags]; see --help");
  std::vector<std::string> spelled = nanoserve::NormalizeFlagNames(argc, argv);
  std::vector<char*> normalized;
  for (std::string& arg : spelled) normalized.push_back(arg.data());
  std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  const std::string command = args.size() > 1 ? args[1] : "";
  nanoserve::TlsOptions tls;
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  absl::StatusOr<nanoserve::TransportCredentials> credentials =
      nanoserve::LoadTransportCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "nanoserve: %s\n", credentials.status().ToString().c_str());
    return 2;
  }
  if (command == "tokenize") return nanoserve::RunTokenize(absl::GetFlag(FLAGS_text));
  if (command == "detokenize") return nanoserve::RunDetokenize(absl::GetFlag(FLAGS_ids));
  if (command == "stats") {
    return nanoserve::RunStats(absl::GetFlag(FLAGS_target), credentials->channel);
  }
  if (command == "health") {
    const absl::Status serving = nanoserve::WaitForServing(
        absl::GetFlag(FLAGS_target), absl::Seconds(absl::GetFlag(FLAGS_timeout_s)),
        credentials->channel);
    if (!serving.ok()) std::fprintf(stderr, "nanoserve: %s\n", serving.ToString().c_str());
    return serving.ok() ? 0 : 1;
  }
  if (command == "generate" || command == "serve" || command == "bench-services") {
    nanoserve::GenerateCommandOptions o;
    o.model = absl::GetFlag(FLAGS_model);
    if (o.model.empty()) o.model = nanoserve::DefaultModelSpec();
    o.prompt = absl::GetFlag(FLAGS_prompt);
    o.prompt_file = absl::GetFlag(FLAGS_prompt_file);
    o.prompts_file = absl::GetFlag(FLAGS_prompts_file);
    o.device = absl::GetFlag(FLAGS_device);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.attention = absl::GetFlag(FLAGS_attention);
    o.kv_cache = absl::GetFlag(FLAGS_kv_cache);
    o.page_size = absl::GetFlag(FLAGS_page_size);
    o.prefix_cache_mb = absl::GetFlag(FLAGS_prefix_cache_mb);
    o.repeat = absl::GetFlag(FLAGS_repeat);
    o.cold_prefix_cache = absl::GetFlag(FLAGS_cold_prefix_cache);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.json = absl::GetFlag(FLAGS_json);
    o.cache_salt = absl::GetFlag(FLAGS_cache_salt);
    o.generate.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.generate.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
    o.generate.stop_at_end_of_text = !absl::GetFlag(FLAGS_ignore_eos);
    o.generate.sampling.temperature = absl::GetFlag(FLAGS_temperature);
    o.generate.sampling.top_k = absl::GetFlag(FLAGS_top_k);
    o.generate.sampling.top_p = absl::GetFlag(FLAGS_top_p);
    o.generate.sampling.seed = absl::GetFlag(FLAGS_seed);
    auto decode = nanoserve::ParseDecodeKind(absl::GetFlag(FLAGS_decode_step));
    if (!decode.ok()) {
      std::fprintf(stderr, "nanoserve: %s\n", decode.status().ToString().c_str());
      return 2;
    }
    o.generate.decode = *decode;
    if (command == "generate" && absl::GetFlag(FLAGS_target).empty())
      return nanoserve::RunGenerate(o);
    if (command == "generate") {
      return nanoserve::RunRemoteGenerate(o, absl::GetFlag(FLAGS_target),
                                          absl::Seconds(absl::GetFlag(FLAGS_timeout_s)),
                                          credentials->channel);
    }
    nanoserve::ServiceStackOptions stack;
    stack.bin_dir = nanoserve::ExecutableDir();
    stack.work_dir = absl::GetFlag(FLAGS_work_dir);
    stack.model.spec = o.model;
    stack.model.seed = o.seed;
    stack.model.device = o.device;
    stack.model.dtype = o.dtype;
    stack.model.attention = o.attention;
    stack.page_size = o.page_size;
    stack.pool_mb = absl::GetFlag(FLAGS_pool_mb);
    stack.max_batch = absl::GetFlag(FLAGS_max_batch);
    const std::string transport =
        absl::StrCat("--kv_transport=", absl::GetFlag(FLAGS_kv_transport));
    stack.prefill_flags.push_back(transport);
    stack.decode_flags.push_back(transport);
    if (command == "serve") {
      stack.kv_store_port = absl::GetFlag(FLAGS_kv_store_port);
      stack.prefill_port = absl::GetFlag(FLAGS_prefill_port);
      stack.decode_port = absl::GetFlag(FLAGS_decode_port);
      stack.http_port = absl::GetFlag(FLAGS_http_port);
      return nanoserve::RunServe(stack, o);
    }
    nanoserve::BenchServicesOptions bench;
    bench.stack = stack;
    bench.max_new_tokens = o.generate.max_new_tokens;
    bench.repeats = absl::GetFlag(FLAGS_repeats);
    bench.prompt_lengths.clear();
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_prompt_lengths), ',')) {
      int64_t n = 0;
      if (absl::SimpleAtoi(part, &n) && n > 0) bench.prompt_lengths.push_back(n);
    }
    if (absl::GetFlag(FLAGS_front_door)) return nanoserve::RunBenchFrontDoor(bench);
    return nanoserve::RunBenchServices(bench);
  }
  if (command == "bench") {
    nanoserve::BenchCommandOptions o;
    o.models = absl::GetFlag(FLAGS_model);
    if (o.models.empty()) o.models = nanoserve::DefaultModelSpec();
    o.attentions = absl::GetFlag(FLAGS_attention);
    o.sweeps = absl::GetFlag(FLAGS_sweeps);
    o.prompt_lens = absl::GetFlag(FLAGS_prompt_lens);
    o.output_lens = absl::GetFlag(FLAGS_output_lens);
    o.shared_lens = absl::GetFlag(FLAGS_shared_lens);
    o.batch_sizes = absl::GetFlag(FLAGS_batch_sizes);
    o.fixed_output = absl::GetFlag(FLAGS_fixed_output);
    o.fixed_prompt = absl::GetFlag(FLAGS_fixed_prompt);
    o.suffix_len = absl::GetFlag(FLAGS_suffix_len);
    o.prefix_output = absl::GetFlag(FLAGS_prefix_output);
    o.bench.device = absl::GetFlag(FLAGS_device);
    o.bench.dtype = absl::GetFlag(FLAGS_dtype);
    o.bench.seed = absl::GetFlag(FLAGS_seed);
    o.bench.repeats = absl::GetFlag(FLAGS_repeats);
    o.bench.warmup = absl::GetFlag(FLAGS_warmup);
    o.bench.page_size = absl::GetFlag(FLAGS_page_size);
    o.bench.csv_path = absl::GetFlag(FLAGS_out);
    o.bench.max_seconds = absl::GetFlag(FLAGS_max_seconds);
    o.bench.progress = absl::GetFlag(FLAGS_progress);
    o.bench.card = absl::GetFlag(FLAGS_card);
    return nanoserve::RunBenchCommand(o);
  }
  if (command == "bench-decode") {
    nanoserve::BenchDecodeOptions o;
    o.model = absl::GetFlag(FLAGS_model);
    if (o.model.empty()) o.model = nanoserve::DefaultModelSpec();
    o.device = absl::GetFlag(FLAGS_device);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.repeats = absl::GetFlag(FLAGS_repeats);
    o.prompt_len = absl::GetFlag(FLAGS_decode_prompt);
    o.output_len = absl::GetFlag(FLAGS_decode_output);
    o.csv_path = absl::GetFlag(FLAGS_out);
    o.card = absl::GetFlag(FLAGS_card);
    o.profile = absl::GetFlag(FLAGS_profile);
    absl::Status parsed = nanoserve::ParseBenchDecodeLists(absl::GetFlag(FLAGS_attention),
                                                           absl::GetFlag(FLAGS_decode_step),
                                                           absl::GetFlag(FLAGS_decode_batches), o);
    if (!parsed.ok()) {
      std::fprintf(stderr, "nanoserve: %s\n", parsed.ToString().c_str());
      return 2;
    }
    return nanoserve::RunBenchDecode(o);
  }
  if (command == "load") {
    nanoserve::LoadCommandOptions o;
    o.target = absl::GetFlag(FLAGS_target);
    o.http = absl::GetFlag(FLAGS_http);
    o.model = absl::GetFlag(FLAGS_model);
    o.credentials = credentials->channel;
    o.rate = absl::GetFlag(FLAGS_rate);
    o.rates = absl::GetFlag(FLAGS_rates);
    o.prompt_len = absl::GetFlag(FLAGS_prompt_len);
    o.output_len = absl::GetFlag(FLAGS_output_len);
    nanoserve::WorkloadOptions& w = o.sweep.workload;
    w.requests = absl::GetFlag(FLAGS_requests);
    w.vocab_size = absl::GetFlag(FLAGS_vocab_size);
    w.shared_prefix_len = absl::GetFlag(FLAGS_shared_prefix_len);
    w.shared_prefix_share = absl::GetFlag(FLAGS_shared_prefix_share);
    w.prompts_file = absl::GetFlag(FLAGS_prompts_file);
    w.seed = absl::GetFlag(FLAGS_seed);
    o.sweep.run.concurrency = absl::GetFlag(FLAGS_concurrency);
    o.sweep.run.seed = absl::GetFlag(FLAGS_seed);
    o.sweep.run.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
    o.sweep.run.cache_salt = absl::GetFlag(FLAGS_cache_salt);
    o.sweep.slo.ttft_ms = absl::GetFlag(FLAGS_slo_ttft_ms);
    o.sweep.slo.tpot_ms = absl::GetFlag(FLAGS_slo_tpot_ms);
    o.sweep.csv_path = absl::GetFlag(FLAGS_csv);
    o.sweep.sweep_csv_path = absl::GetFlag(FLAGS_sweep_csv);
    o.sweep.plot_path = absl::GetFlag(FLAGS_plot);
    return nanoserve::RunLoadCommand(o);
  }
  if (command == "export-hf") {
    std::string model = absl::GetFlag(FLAGS_model);
    if (model.empty()) model = nanoserve::DefaultModelSpec();
    return nanoserve::RunExportHf(model, absl::GetFlag(FLAGS_seed), absl::GetFlag(FLAGS_out));
  }
  std::fprintf(stderr,
               "nanoserve: unknown command '%s' (tokenize, detokenize, generate, bench, export-hf, "
               "stats, health, serve, bench-services, bench-decode, load)\n",
               command.c_str());
  return 2;
}
