#include "bench/load_runner.h"

#include <algorithm>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/load_schedule.h"

namespace nanoserve {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// Sends one request and records what its client saw.
RequestRecord SendOne(LoadClient& client, const LoadPrompt& prompt, int64_t index,
                      absl::Time run_start, const LoadRunOptions& o) {
  RequestRecord r;
  r.index = index;
  r.max_tokens = prompt.max_tokens;
  r.shared_prefix = prompt.shared_prefix;
  const absl::Time sent = absl::Now();
  r.start_s = absl::ToDoubleSeconds(sent - run_start);
  absl::StatusOr<LoadResponse> response = client.Send(prompt, o.cache_salt, sent + o.timeout);
  r.e2e_ms = Ms(absl::Now() - sent);
  if (!response.ok()) {
    r.error = response.status().ToString();
    return r;
  }
  const std::vector<absl::Time>& times = response->token_times;
  r.ok = true;
  r.output_tokens = static_cast<int64_t>(times.size());
  if (!times.empty()) r.ttft_ms = Ms(times.front() - sent);
  for (size_t i = 1; i < times.size(); ++i) r.itl_ms.push_back(Ms(times[i] - times[i - 1]));
  r.prompt_tokens = response->prompt_tokens;
  r.cached_prompt_tokens = response->cached_prompt_tokens;
  r.server = response->server;
  return r;
}

}  // namespace

LoadRun RunLoad(LoadClient& client, const std::vector<LoadPrompt>& workload,
                const LoadRunOptions& o) {
  const std::vector<absl::Duration> arrivals =
      PoissonArrivals(static_cast<int64_t>(workload.size()), o.rate, o.seed);
  LoadRun run;
  run.records.resize(workload.size());  // each thread writes its own element
  absl::Mutex mu;
  int64_t in_flight = 0;  // guarded by mu
  const absl::Time start = absl::Now();
  absl::Time end = start;  // guarded by mu: the last call's end
  std::vector<std::thread> threads;
  threads.reserve(workload.size());
  for (size_t i = 0; i < workload.size(); ++i) {
    absl::SleepFor(start + arrivals[i] - absl::Now());
    {
      absl::MutexLock lock(&mu);
      const auto slot_free = [&] { return o.concurrency <= 0 || in_flight < o.concurrency; };
      mu.Await(absl::Condition(&slot_free));
      ++in_flight;
    }
    threads.emplace_back([&, i] {
      run.records[i] = SendOne(client, workload[i], static_cast<int64_t>(i), start, o);
      absl::MutexLock lock(&mu);
      --in_flight;
      end = std::max(end, absl::Now());
    });
  }
  for (std::thread& t : threads) t.join();
  run.duration_s = absl::ToDoubleSeconds(end - start);
  return run;
}

}  // namespace nanoserve
