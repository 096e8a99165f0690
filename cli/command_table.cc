#include "cli/command_table.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nanoserve {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "nanoserve: %s\n", std::string(status.message()).c_str());
  return 1;
}

absl::Span<const Command> Commands() {
  static const Command kCommands[] = {
      {"tokenize", "--text T: prints the ids as a JSON array", TokenizeMain},
      {"detokenize", "--ids 1,2,3: prints the text", DetokenizeMain},
      {"generate",
       "runs the engine in this process and streams text; with --target H:P streams from a "
       "running decode service instead",
       GenerateMain},
      {"bench", "the Parts A-C sweeps: CSV of every point + a table", BenchMain},
      {"export-hf", "--model M --out D: writes M as an HF checkpoint (for bench/hf_peer.py)",
       ExportHfMain},
      {"stats", "--target H:P: prints a KV store's statistics as JSON", StatsMain},
      {"health", "--target H:P: exits 0 once the service answers SERVING (for probes)", HealthMain},
      {"serve", "starts kv store, prefill and decode on loopback", ServeMain},
      {"bench-services",
       "offline engine vs services: TTFT, ms/token, KV handoff; --front_door: gRPC vs the "
       "OpenAI HTTP API",
       BenchServicesMain},
      {"bench-decode", "the decode step: reference vs CUDA graph, batch 1/8/64", BenchDecodeMain},
      {"load",
       "--target H:P [--http]: a load generator against a decode service: throughput, TTFT, "
       "TPOT, ITL, goodput; CSV; rate sweeps, plot",
       LoadMain},
  };
  return kCommands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

std::string CommandsUsage() {
  std::string usage =
      "nanoserve <command> [flags]; calls with --target go over mutual TLS with --tls_cert, "
      "--tls_key, --tls_ca. Commands:\n";
  for (const Command& command : Commands()) {
    absl::StrAppendFormat(&usage, "  %-15s %s\n", command.name, command.help);
  }
  return usage;
}

}  // namespace nanoserve
