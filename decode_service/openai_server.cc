#include "decode_service/openai_server.h"

#include <iterator>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "decode_service/openai_api.h"

namespace nanoserve {
namespace {

using nlohmann::json;

// A choice's token, or its end.
struct Event {
  int64_t choice = 0;
  bool finished = false;
  StreamedToken token;      // when !finished
  absl::Status status;      // when finished
  GenerateSummary summary;  // when finished with OK
};

// Where a request's choices put their events, in order per choice.
class EventQueue {
 public:
  void Push(Event event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
    }
    ready_.notify_all();
  }

  // The events so far, waiting up to `timeout` for one.
  std::vector<Event> Take(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait_for(lock, absl::ToChronoMicroseconds(timeout), [&] { return !events_.empty(); });
    std::vector<Event> out;
    out.swap(events_);
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::vector<Event> events_;
};

class ChoiceEvents final : public GenerateEvents {
 public:
  ChoiceEvents(std::shared_ptr<EventQueue> queue, int64_t choice)
      : queue_(std::move(queue)), choice_(choice) {}
  void OnToken(const StreamedToken& token) override {
    Event e;
    e.choice = choice_;
    e.token = token;
    queue_->Push(std::move(e));
  }
  void OnFinish(const absl::Status& status, const GenerateSummary& summary) override {
    Event e;
    e.choice = choice_;
    e.finished = true;
    e.status = status;
    e.summary = summary;
    queue_->Push(std::move(e));
  }

 private:
  const std::shared_ptr<EventQueue> queue_;
  const int64_t choice_;
};

// What a request's choices produced so far.
struct Progress {
  explicit Progress(size_t n) : choices(n), seen(n, false) {}

  void Add(const Event& e) {
    if (!seen[e.choice]) {
      seen[e.choice] = true;
      ++started;
    }
    CompletionChoice& c = choices[e.choice];
    if (!e.finished) {
      c.text += e.token.text;
      c.token_ids.push_back(e.token.id);
      return;
    }
    ++ended;
    if (!e.status.ok()) {
      if (failure.ok()) failure = e.status;
      return;
    }
    c.text += e.summary.trailing_text;
    c.summary = e.summary;
  }
  bool all_started() const { return started == choices.size(); }
  bool all_ended() const { return ended == choices.size(); }

  std::vector<CompletionChoice> choices;
  std::vector<bool> seen;  // an event of the choice came
  size_t started = 0, ended = 0;
  absl::Status failure;  // of the first choice that failed
};

std::string NewCompletionId() {
  thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrFormat("cmpl-%016x%016x", random(), random());
}

uint64_t RandomSeed() {
  thread_local std::mt19937_64 random(std::random_device{}());
  return random();
}

void SetJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void SetError(httplib::Response& res, const absl::Status& status, absl::string_view code = "") {
  const int http = HttpStatusFor(status);
  SetJson(res, http, ErrorJson(http, status.message(), code));
}

}  // namespace

// One request's calls: registered with the server while it lives (so that
// Stop can cancel it); cancels every call that has not ended when the
// response is done with it, e.g. when the client went away.
class OpenAiServer::InFlight {
 public:
  explicit InFlight(OpenAiServer* server)
      : server_(server), queue_(std::make_shared<EventQueue>()) {
    server_->Register(this);
  }
  ~InFlight() {
    CancelAll();
    server_->Unregister(this);
  }

  void Start(const std::vector<GenerateParams>& choices, absl::Time deadline) {
    for (size_t i = 0; i < choices.size(); ++i) {
      auto call =
          server_->stage_->Start(choices[i], deadline, std::make_shared<ChoiceEvents>(queue_, i));
      std::lock_guard<std::mutex> lock(mu_);
      calls_.push_back(std::move(call));
    }
  }
  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& call : calls_) server_->stage_->Cancel(call);
  }
  EventQueue& queue() { return *queue_; }

 private:
  OpenAiServer* const server_;
  const std::shared_ptr<EventQueue> queue_;
  std::mutex mu_;
  std::vector<std::shared_ptr<DecodeStage::Call>> calls_;  // guarded by mu_
};

namespace {

// A streamed response after its headers: the events, as SSE text.
class SseStream {
 public:
  SseStream(std::shared_ptr<OpenAiServer::InFlight> request, CompletionHeader header,
            const CompletionRequest& parsed, std::vector<Event> first, absl::Duration heartbeat)
      : request_(std::move(request)),
        header_(std::move(header)),
        include_usage_(parsed.include_usage),
        token_ids_(parsed.return_token_ids),
        pending_(std::move(first)),
        summaries_(parsed.choices.size()),
        heartbeat_(heartbeat) {}

  // httplib's chunked content provider: writes what came since, or a
  // comment after `heartbeat_` of silence; false when the client is gone.
  bool Provide(httplib::DataSink& sink) {
    std::vector<Event> events;
    events.swap(pending_);
    if (events.empty()) events = request_->queue().Take(heartbeat_);
    std::string out = events.empty() ? ": keep-alive\n\n" : Format(events);
    if (!sink.write(out.data(), out.size())) return false;  // InFlight cancels
    if (done_) sink.done();
    return true;
  }

 private:
  std::string Format(const std::vector<Event>& events) {
    std::string out;
    for (const Event& e : events) {
      if (done_) break;
      if (!e.finished) {
        const std::vector<int> id = {e.token.id};
        out += SseEvent(ChunkJson(header_, e.choice, e.token.text, token_ids_ ? &id : nullptr, "",
                                  include_usage_));
        continue;
      }
      if (!e.status.ok()) {  // after the first tokens: an error event ends the stream
        request_->CancelAll();
        out += SseEvent(ErrorJson(HttpStatusFor(e.status), e.status.message()));
        out += std::string(kSseDone);
        done_ = true;
        break;
      }
      const std::vector<int> none;
      out += SseEvent(ChunkJson(header_, e.choice, e.summary.trailing_text,
                                token_ids_ ? &none : nullptr, e.summary.finish_reason,
                                include_usage_));
      summaries_[e.choice] = e.summary;
      if (++ended_ == summaries_.size()) {
        if (include_usage_) out += SseEvent(UsageChunkJson(header_, UsageJson(summaries_)));
        out += std::string(kSseDone);
        done_ = true;
      }
    }
    return out;
  }

  const std::shared_ptr<OpenAiServer::InFlight> request_;
  const CompletionHeader header_;
  const bool include_usage_;
  const bool token_ids_;
  std::vector<Event> pending_;  // came before the headers went out
  std::vector<GenerateSummary> summaries_;
  size_t ended_ = 0;
  bool done_ = false;
  const absl::Duration heartbeat_;
};

}  // namespace

OpenAiServer::OpenAiServer(DecodeStage* stage, const OpenAiServerOptions& options,
                           MetricsRegistry* metrics)
    : stage_(stage),
      options_(options),
      metrics_(metrics),
      created_(absl::ToUnixSeconds(absl::Now())),
      http_(options.http) {
  httplib::Server& routes = http_.routes();
  routes.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Completions(req.body, res);
  });
  routes.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    SetJson(res, 200, ModelsJson(options_.model_id, created_));
  });
  routes.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool up = !draining_.load();
    SetJson(res, up ? 200 : 503, {{"status", up ? "ok" : "shutting down"}});
  });
  // Unknown paths, wrong methods, bodies over the bound: OpenAI's shape.
  routes.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 413
                                    ? "the request body is too large"
                                    : absl::StrCat("no such endpoint: ", req.method, " ", req.path);
    SetJson(res, res.status, ErrorJson(res.status, message));
  });
  if (metrics_ != nullptr) {
    metrics_->AddGauge("nanoserve_decode_http_requests_in_flight",
                       "OpenAI API requests being served (streams included).", [this] {
                         std::lock_guard<std::mutex> lock(mu_);
                         return static_cast<double>(requests_.size());
                       });
  }
}

OpenAiServer::~OpenAiServer() {
  if (started_) Stop(absl::Now());
}

absl::StatusOr<int> OpenAiServer::Start() {
  absl::StatusOr<int> port = http_.Start(options_.listen);
  started_ = port.ok();
  return port;
}

void OpenAiServer::Drain() { draining_.store(true); }

void OpenAiServer::Stop(absl::Time deadline) {
  draining_.store(true);
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait_for(lock,
                 absl::ToChronoMicroseconds(std::max(deadline - absl::Now(), absl::ZeroDuration())),
                 [&] { return requests_.empty(); });
  for (InFlight* request : requests_) request->CancelAll();
  // Cancelled calls end at the scheduler's next step; their streams then end.
  idle_.wait_for(lock, std::chrono::seconds(10), [&] { return requests_.empty(); });
  lock.unlock();
  http_.Stop();
  started_ = false;
}

void OpenAiServer::Register(InFlight* request) {
  std::lock_guard<std::mutex> lock(mu_);
  requests_.insert(request);
}

void OpenAiServer::Unregister(InFlight* request) {
  std::lock_guard<std::mutex> lock(mu_);
  requests_.erase(request);
  if (requests_.empty()) idle_.notify_all();
}

void OpenAiServer::Count(int http_status) {
  if (metrics_ == nullptr) return;
  metrics_
      ->AddCounter("nanoserve_decode_http_requests_total", "OpenAI API completions by HTTP status.",
                   absl::StrCat("code=\"", http_status, "\""))
      ->Increment();
}

void OpenAiServer::Completions(const std::string& body, httplib::Response& res) {
  auto respond_error = [&](const absl::Status& status, absl::string_view code = "") {
    SetError(res, status, code);
    Count(res.status);
  };
  if (draining_.load()) return respond_error(absl::UnavailableError("shutting down"));
  absl::StatusOr<CompletionRequest> parsed =
      ParseCompletionRequest(body, options_.max_choices, RandomSeed());
  if (!parsed.ok()) return respond_error(parsed.status());
  if (parsed->model != options_.model_id) {
    return respond_error(absl::NotFoundError(absl::StrCat("the model '", parsed->model,
                                                          "' does not exist; this "
                                                          "server has '",
                                                          options_.model_id, "'")),
                         "model_not_found");
  }
  auto request = std::make_shared<InFlight>(this);
  request->Start(parsed->choices, absl::Now() + options_.timeout);
  // Until every choice has started (or one failed): bad input gets its status.
  Progress progress(parsed->choices.size());
  std::vector<Event> taken;
  const bool streamed = parsed->stream;
  while (progress.failure.ok() && !(streamed ? progress.all_started() : progress.all_ended())) {
    for (Event& e : request->queue().Take(absl::Seconds(1))) {
      progress.Add(e);
      taken.push_back(std::move(e));
    }
  }
  if (!progress.failure.ok()) return respond_error(progress.failure);
  const CompletionHeader header{NewCompletionId(), absl::ToUnixSeconds(absl::Now()),
                                options_.model_id};
  Count(200);
  if (!streamed) {
    SetJson(res, 200, CompletionJson(header, progress.choices, parsed->return_token_ids));
    return;
  }
  auto stream =
      std::make_shared<SseStream>(request, header, *parsed, std::move(taken), options_.heartbeat);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [stream](size_t, httplib::DataSink& sink) {
    return stream->Provide(sink);
  });
}

}  // namespace nanoserve
