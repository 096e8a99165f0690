#include "bench/sweep.h"

#include <algorithm>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace nanoserve {
namespace {

constexpr int64_t kMaxListItems = 10000;

absl::Status BadItem(absl::string_view item, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("bad list item '", item, "': ", why));
}

// Appends `value` unless `out` already has it.
void AddUnique(std::vector<int64_t>& out, int64_t value) {
  if (std::find(out.begin(), out.end(), value) == out.end()) out.push_back(value);
}

absl::Status ParseRange(absl::string_view item, std::vector<int64_t>& out) {
  const size_t dots = item.find("..");
  const absl::string_view first = item.substr(0, dots);
  absl::string_view rest = item.substr(dots + 2);
  const size_t op_at = rest.find_first_of("*+");
  if (op_at == absl::string_view::npos) {
    return BadItem(item, "a range needs a step: a..b*factor or a..b+step");
  }
  const char op = rest[op_at];
  int64_t a = 0, b = 0, step = 0;
  if (!absl::SimpleAtoi(first, &a) || !absl::SimpleAtoi(rest.substr(0, op_at), &b) ||
      !absl::SimpleAtoi(rest.substr(op_at + 1), &step)) {
    return BadItem(item, "not a..b*factor or a..b+step with integers");
  }
  if (a < 0 || b < a) return BadItem(item, "needs 0 <= a <= b");
  if (op == '*' && (step < 2 || a < 1))
    return BadItem(item, "a geometric range needs a >= 1, factor >= 2");
  if (op == '+' && step < 1) return BadItem(item, "an arithmetic range needs step >= 1");
  if (op == '+' && (b - a) / step >= kMaxListItems) return BadItem(item, "too many items");
  for (int64_t v = a; v <= b;) {
    AddUnique(out, v);
    if (op == '*') {
      if (v > b / step) break;
      v *= step;
    } else {
      v += step;
    }
  }
  AddUnique(out, b);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SweepKind> ParseSweepKind(absl::string_view name) {
  if (name == "prompt") return SweepKind::kPrompt;
  if (name == "output") return SweepKind::kOutput;
  if (name == "prefix") return SweepKind::kPrefix;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown sweep '", name, "' (expected prompt, output or prefix)"));
}

std::string SweepKindName(SweepKind kind) {
  switch (kind) {
    case SweepKind::kPrompt:
      return "prompt";
    case SweepKind::kOutput:
      return "output";
    case SweepKind::kPrefix:
      return "prefix";
  }
  return "?";
}

absl::StatusOr<std::vector<int64_t>> ParseIntList(absl::string_view spec) {
  std::vector<int64_t> out;
  for (absl::string_view raw : absl::StrSplit(spec, ',')) {
    absl::string_view item = absl::StripAsciiWhitespace(raw);
    if (item.empty())
      return absl::InvalidArgumentError(absl::StrCat("empty item in list '", spec, "'"));
    if (item.find("..") != absl::string_view::npos) {
      if (absl::Status s = ParseRange(item, out); !s.ok()) return s;
    } else {
      int64_t v = 0;
      if (!absl::SimpleAtoi(item, &v) || v < 0) return BadItem(item, "not a non-negative integer");
      AddUnique(out, v);
    }
    if (static_cast<int64_t>(out.size()) > kMaxListItems) {
      return absl::InvalidArgumentError(absl::StrCat("list '", spec, "' has too many items"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseNameList(absl::string_view spec) {
  std::vector<std::string> out;
  for (absl::string_view raw : absl::StrSplit(spec, ',')) {
    absl::string_view item = absl::StripAsciiWhitespace(raw);
    if (item.empty())
      return absl::InvalidArgumentError(absl::StrCat("empty item in list '", spec, "'"));
    out.emplace_back(item);
  }
  return out;
}

absl::Status ValidateBenchSpec(const BenchSpec& spec) {
  if (spec.models.empty()) return absl::InvalidArgumentError("no model to benchmark");
  if (spec.attentions.empty()) return absl::InvalidArgumentError("no attention kind to benchmark");
  if (spec.sweeps.empty()) return absl::InvalidArgumentError("no sweep to run");
  auto positive = [](const std::vector<int64_t>& values, int64_t min, const char* name) {
    if (values.empty()) return absl::InvalidArgumentError(absl::StrCat(name, " is empty"));
    for (int64_t v : values) {
      if (v < min) {
        return absl::InvalidArgumentError(absl::StrCat(name, " must be >= ", min, ", got ", v));
      }
    }
    return absl::OkStatus();
  };
  for (absl::Status s : {positive(spec.prompt_lens, 1, "prompt lengths"),
                         positive(spec.output_lens, 1, "output lengths"),
                         positive(spec.shared_lens, 0, "shared lengths"),
                         positive(spec.batch_sizes, 1, "batch sizes"),
                         positive({spec.fixed_output}, 1, "fixed output"),
                         positive({spec.fixed_prompt}, 1, "fixed prompt"),
                         positive({spec.suffix_len}, 1, "suffix length"),
                         positive({spec.prefix_output}, 1, "prefix output")}) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string BenchPoint::Label() const {
  return absl::StrFormat("%s %s B=%d P=%d S=%d O=%d", SweepKindName(sweep), KvCacheModeName(mode),
                         batch, prompt_len, shared_len, output_len);
}

std::vector<KvCacheMode> SweepModes(SweepKind kind) {
  if (kind == SweepKind::kPrefix) return {KvCacheMode::kOn, KvCacheMode::kPrefix};
  return {KvCacheMode::kOff, KvCacheMode::kOn};
}

bool SameShape(const BenchPoint& a, const BenchPoint& b) {
  return a.model == b.model && a.attention == b.attention && a.sweep == b.sweep &&
         a.batch == b.batch && a.shared_len == b.shared_len && a.prompt_len == b.prompt_len &&
         a.output_len == b.output_len;
}

std::vector<BenchPoint> ExpandPoints(const BenchSpec& spec) {
  std::vector<BenchPoint> points;
  for (const std::string& model : spec.models) {
    for (AttentionKind attention : spec.attentions) {
      for (SweepKind sweep : spec.sweeps) {
        BenchPoint base;
        base.model = model;
        base.attention = attention;
        base.sweep = sweep;
        std::vector<BenchPoint> shapes;
        if (sweep == SweepKind::kPrompt) {
          for (int64_t p : spec.prompt_lens) {
            base.prompt_len = p;
            base.output_len = spec.fixed_output;
            shapes.push_back(base);
          }
        } else if (sweep == SweepKind::kOutput) {
          for (int64_t o : spec.output_lens) {
            base.prompt_len = spec.fixed_prompt;
            base.output_len = o;
            shapes.push_back(base);
          }
        } else {
          for (int64_t b : spec.batch_sizes) {
            for (int64_t s : spec.shared_lens) {
              base.batch = b;
              base.shared_len = s;
              base.prompt_len = s + spec.suffix_len;
              base.output_len = spec.prefix_output;
              shapes.push_back(base);
            }
          }
        }
        for (BenchPoint shape : shapes) {
          for (KvCacheMode mode : SweepModes(sweep)) {
            shape.mode = mode;
            points.push_back(shape);
          }
        }
      }
    }
  }
  return points;
}

bool FitsContext(const BenchPoint& point, int64_t n_positions) {
  return point.prompt_len + point.output_len <= n_positions;
}

std::vector<std::vector<int>> MakePrompts(const BenchPoint& point, int64_t vocab_size,
                                          uint64_t seed) {
  // One stream per shape: the mode and attention do not enter the seed.
  std::seed_seq seq{seed, static_cast<uint64_t>(point.batch),
                    static_cast<uint64_t>(point.shared_len),
                    static_cast<uint64_t>(point.prompt_len)};
  std::mt19937_64 rng(seq);
  std::uniform_int_distribution<int> token(0, static_cast<int>(vocab_size) - 1);
  const int64_t shared = std::min(point.shared_len, point.prompt_len);
  std::vector<int> prefix(shared);
  for (int& t : prefix) t = token(rng);
  const int first_own_base = token(rng);
  std::vector<std::vector<int>> prompts;
  for (int64_t r = 0; r < point.batch; ++r) {
    std::vector<int> p = prefix;
    for (int64_t i = shared; i < point.prompt_len; ++i) {
      p.push_back(i == shared ? static_cast<int>((first_own_base + r) % vocab_size) : token(rng));
    }
    prompts.push_back(std::move(p));
  }
  return prompts;
}

double EstimatedCost(const BenchPoint& point) {
  // A forward pass costs about as much as this many extra tokens on top of
  // the tokens it carries (launches, the LM head, sampling).
  constexpr double kPassOverhead = 32;
  const double b = static_cast<double>(point.batch);
  const double p = static_cast<double>(point.prompt_len);
  const double o = static_cast<double>(point.output_len);
  if (point.mode == KvCacheMode::kOff) {
    return b * (o * p + o * (o - 1) / 2 + o * kPassOverhead);
  }
  const double computed = point.mode == KvCacheMode::kPrefix
                              ? b * (p - static_cast<double>(point.shared_len)) + point.shared_len
                              : b * p;
  return computed + b * kPassOverhead + (o - 1) * (b + kPassOverhead);
}

}  // namespace nanoserve
