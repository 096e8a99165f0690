#include "decode_service/openai_server.h"

#include <iterator>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
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

HttpResponse JsonResponse(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse ErrorResponse(const absl::Status& status, absl::string_view code = "") {
  const int http = HttpStatusFor(status);
  return JsonResponse(http, ErrorJson(http, status.message(), code));
}

// The HTTP server's own errors (404, 405, 413, 503) in OpenAI's shape.
HttpServerOptions WithOpenAiErrors(HttpServerOptions options) {
  options.error_response = [](int status, const std::string& message) {
    return JsonResponse(status, ErrorJson(status, message));
  };
  return options;
}

// A streamed response's events as SSE text, in order.
class SseFormatter {
 public:
  SseFormatter(CompletionHeader header, const CompletionRequest& parsed)
      : header_(std::move(header)),
        include_usage_(parsed.include_usage),
        token_ids_(parsed.return_token_ids),
        summaries_(parsed.choices.size()) {}

  // The events' text; sets failed() on an error event (which ends the stream).
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
        out += SseEvent(ErrorJson(HttpStatusFor(e.status), e.status.message()));
        out += std::string(kSseDone);
        done_ = failed_ = true;
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
  bool done() const { return done_; }
  bool failed() const { return failed_; }

 private:
  const CompletionHeader header_;
  const bool include_usage_;
  const bool token_ids_;
  std::vector<GenerateSummary> summaries_;
  size_t ended_ = 0;
  bool done_ = false;
  bool failed_ = false;
};

// Equal in a time that does not depend on where they first differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : ~a[i]));
  }
  return diff == 0;
}

HttpResponse Unauthorized() {
  HttpResponse r = JsonResponse(
      401, ErrorJson(401,
                     "this server needs an API key: send the header 'Authorization: Bearer "
                     "<key>' with the key it was started with (--api_key)",
                     "invalid_api_key"));
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

}  // namespace

absl::Status CheckHttpGuard(const OpenAiServerOptions& options) {
  if (options.listen.empty() || IsLoopbackAddress(options.listen)) return absl::OkStatus();
  if (!options.api_key.empty() || options.allow_insecure) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the HTTP API would listen on ", options.listen,
      ", beyond loopback, with no authentication: anyone who reaches it could use it (the "
      "gRPC side's TLS does not cover it). Set an API key (--api_key or $NANOSERVE_API_KEY; "
      "clients send 'Authorization: Bearer <key>'), listen on loopback (--http_listen "
      "127.0.0.1:8000), or say that something else guards it with --allow_insecure_http"));
}

bool OpenAiServer::Authorized(const HttpRequest& request) const {
  if (options_.api_key.empty()) return true;
  const std::string authorization = request.Header("authorization");
  absl::string_view key = authorization;
  if (!absl::ConsumePrefix(&key, "Bearer ")) return false;
  return ConstantTimeEquals(absl::StripAsciiWhitespace(key), options_.api_key);
}

// One request: its calls, and the response they drive. Its choices' events
// (on the stage's threads) hold it; it is registered with the server until
// every choice has ended (so that Stop can cancel it). The client going away
// cancels every call.
class OpenAiServer::InFlight : public std::enable_shared_from_this<InFlight> {
 public:
  InFlight(OpenAiServer* server, CompletionRequest parsed, std::shared_ptr<HttpResponder> responder)
      : server_(server),
        parsed_(std::move(parsed)),
        responder_(std::move(responder)),
        progress_(parsed_.choices.size()) {}
  ~InFlight() { server_->Unregister(this); }

  // Registers, and starts the choices.
  void Start(absl::Time deadline);

  void CancelAll() {
    std::vector<std::shared_ptr<DecodeStage::Call>> calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      calls = calls_;
    }
    for (const auto& call : calls) server_->stage_->Cancel(call);
  }

 private:
  class Events;
  enum class Phase { kWaiting, kStreaming, kDone };

  void OnEvent(Event e) {
    bool cancel = false;
    bool all_ended = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.Add(e);
      all_ended = progress_.all_ended();
      if (phase_ == Phase::kWaiting) {
        taken_.push_back(std::move(e));
        cancel = Answer();
      } else if (phase_ == Phase::kStreaming) {
        responder_->Write(sse_->Format({e}));
        if (sse_->done()) {
          responder_->End();
          phase_ = Phase::kDone;
          cancel = sse_->failed();
        }
      }
      if (all_ended) calls_.clear();  // they hold this: no cycle is left
    }
    if (cancel) CancelAll();
    if (all_ended) server_->Unregister(this);
  }

  // REQUIRES: mu_, phase_ kWaiting. Answers once the status is known: an
  // error, the whole response, or a stream's start. Returns whether the
  // remaining calls are to be cancelled.
  bool Answer() {
    if (!progress_.failure.ok()) {
      phase_ = Phase::kDone;
      const HttpResponse r = ErrorResponse(progress_.failure);
      server_->Count(r.status);
      responder_->Respond(r);
      return true;
    }
    if (!(parsed_.stream ? progress_.all_started() : progress_.all_ended())) return false;
    const CompletionHeader header{NewCompletionId(), absl::ToUnixSeconds(absl::Now()),
                                  server_->options_.model_id};
    server_->Count(200);
    if (!parsed_.stream) {
      phase_ = Phase::kDone;
      responder_->Respond(
          JsonResponse(200, CompletionJson(header, progress_.choices, parsed_.return_token_ids)));
      return false;
    }
    sse_ = std::make_unique<SseFormatter>(header, parsed_);
    HttpResponse head;
    head.content_type = "text/event-stream";
    head.headers.emplace_back("Cache-Control", "no-cache");
    head.body = sse_->Format(taken_);
    taken_.clear();
    responder_->StartStream(std::move(head));
    phase_ = Phase::kStreaming;
    if (sse_->done()) {
      responder_->End();
      phase_ = Phase::kDone;
      return sse_->failed();
    }
    return false;
  }

  OpenAiServer* const server_;
  const CompletionRequest parsed_;
  const std::shared_ptr<HttpResponder> responder_;
  std::mutex mu_;
  std::vector<std::shared_ptr<DecodeStage::Call>> calls_;  // guarded by mu_
  bool cancelled_ = false;                                 // guarded by mu_
  Phase phase_ = Phase::kWaiting;                          // guarded by mu_
  Progress progress_;                                      // guarded by mu_
  std::vector<Event> taken_;           // before the stream started; guarded by mu_
  std::unique_ptr<SseFormatter> sse_;  // once streaming; guarded by mu_
};

// A choice's events, into its request.
class OpenAiServer::InFlight::Events final : public GenerateEvents {
 public:
  Events(std::shared_ptr<InFlight> request, int64_t choice)
      : request_(std::move(request)), choice_(choice) {}
  void OnToken(const StreamedToken& token) override {
    Event e;
    e.choice = choice_;
    e.token = token;
    request_->OnEvent(std::move(e));
  }
  void OnFinish(const absl::Status& status, const GenerateSummary& summary) override {
    Event e;
    e.choice = choice_;
    e.finished = true;
    e.status = status;
    e.summary = summary;
    request_->OnEvent(std::move(e));
  }

 private:
  const std::shared_ptr<InFlight> request_;
  const int64_t choice_;
};

void OpenAiServer::InFlight::Start(absl::Time deadline) {
  server_->Register(this);
  std::weak_ptr<InFlight> weak = shared_from_this();
  responder_->OnClientGone([weak] {
    if (auto self = weak.lock()) self->CancelAll();
  });
  for (size_t i = 0; i < parsed_.choices.size(); ++i) {
    auto call = server_->stage_->Start(parsed_.choices[i], deadline,
                                       std::make_shared<Events>(shared_from_this(), i));
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_.push_back(call);
      cancelled = cancelled_;
    }
    if (cancelled) server_->stage_->Cancel(call);
  }
}

OpenAiServer::OpenAiServer(DecodeStage* stage, const OpenAiServerOptions& options,
                           MetricsRegistry* metrics)
    : stage_(stage),
      options_(options),
      metrics_(metrics),
      created_(absl::ToUnixSeconds(absl::Now())),
      http_(WithOpenAiErrors(options.http)) {
  http_.Handle("POST", "/v1/completions",
               [this](const HttpRequest& request, std::shared_ptr<HttpResponder> responder) {
                 Completions(request, std::move(responder));
               });
  http_.Handle("GET", "/v1/models", [this](const HttpRequest& request) {
    if (!Authorized(request)) return Unauthorized();
    return JsonResponse(200, ModelsJson(options_.model_id, created_));
  });
  http_.Handle("GET", "/health", [this](const HttpRequest&) {
    const bool up = !draining_.load();
    return JsonResponse(up ? 200 : 503, {{"status", up ? "ok" : "shutting down"}});
  });
  if (metrics_ != nullptr) {
    metrics_->AddGauge("nanoserve_decode_http_requests_in_flight",
                       "OpenAI API requests being served (streams included).", [this] {
                         std::lock_guard<std::mutex> lock(mu_);
                         return static_cast<double>(requests_.size());
                       });
    metrics_->AddGauge("nanoserve_decode_http_connections",
                       "Open connections to the OpenAI API (idle ones included).",
                       [this] { return static_cast<double>(http_.connections()); });
  }
}

OpenAiServer::~OpenAiServer() {
  if (started_) Stop(absl::Now());
}

absl::StatusOr<int> OpenAiServer::Start() {
  if (absl::Status unguarded = CheckHttpGuard(options_); !unguarded.ok()) return unguarded;
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
  std::vector<std::shared_ptr<InFlight>> left;
  for (InFlight* request : requests_) {
    if (auto held = request->weak_from_this().lock()) left.push_back(std::move(held));
  }
  lock.unlock();
  for (const auto& request : left) request->CancelAll();
  left.clear();
  // Cancelled calls end at the scheduler's next step; their responses then end.
  lock.lock();
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

void OpenAiServer::Completions(const HttpRequest& request,
                               std::shared_ptr<HttpResponder> responder) {
  auto respond_error = [&](const absl::Status& status, absl::string_view code = "") {
    const HttpResponse r = ErrorResponse(status, code);
    Count(r.status);
    responder->Respond(r);
  };
  if (!Authorized(request)) {
    const HttpResponse r = Unauthorized();
    Count(r.status);
    return responder->Respond(r);
  }
  if (draining_.load()) return respond_error(absl::UnavailableError("shutting down"));
  absl::StatusOr<CompletionRequest> parsed =
      ParseCompletionRequest(request.body, options_.max_choices, RandomSeed());
  if (!parsed.ok()) return respond_error(parsed.status());
  if (parsed->model != options_.model_id) {
    return respond_error(absl::NotFoundError(absl::StrCat("the model '", parsed->model,
                                                          "' does not exist; this "
                                                          "server has '",
                                                          options_.model_id, "'")),
                         "model_not_found");
  }
  // Who asks, for its share of admission: the client's address (one API
  // key is one secret every client shares, so it names no one).
  for (GenerateParams& choice : parsed->choices) choice.caller = request.client_address;
  auto in_flight = std::make_shared<InFlight>(this, *std::move(parsed), std::move(responder));
  in_flight->Start(absl::Now() + options_.timeout);
}

}  // namespace nanoserve
