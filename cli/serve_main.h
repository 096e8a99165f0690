// `nanoserve serve`: the three services on loopback (client/service_client.h's
// ServiceStack). Its stack's flags (--work_dir, --pool_mb, --max_batch,
// --kv_transport and the generation flags each service takes) are read by
// `bench-services` too.
#ifndef NANOSERVE_CLI_SERVE_MAIN_H_
#define NANOSERVE_CLI_SERVE_MAIN_H_

#include "cli/commands.h"
#include "client/service_client.h"

namespace nanoserve {

// The stack `generate`'s flags in `o` and --work_dir, --pool_mb, --max_batch,
// --kv_transport describe, beside this binary: every service gets o's model
// flags; the KV store --page_size and --pool_mb; prefill and decode
// --kv_transport and --prefill_chunk; decode --page_size (as
// --kv_page_size), --max_batch and --decode_step.
ServiceStackOptions ServiceStackOptionsFromFlags(const GenerateCommandOptions& o);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_SERVE_MAIN_H_
