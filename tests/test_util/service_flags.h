// Checks that a service binary's options struct (options/<service>_options.h)
// carries every flag the binary defines, both ways: its ToArgv spells each
// flag once, and FromFlags reads back what ToArgv wrote. A test binary links
// one service's flag files (as the service binary does) and calls these; a
// flag added to a flag file but not to the struct's ToArgv and FromFlags
// fails them.
#ifndef NANOSERVE_TESTS_TEST_UTIL_SERVICE_FLAGS_H_
#define NANOSERVE_TESTS_TEST_UTIL_SERVICE_FLAGS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "base/flag_range.h"
#include "gtest/gtest.h"

namespace nanoserve::testing {

// The flags this binary defines in its service flag files (rpc/service_main.cc,
// *_flags.cc; a main.cc defines none), not Abseil's own.
inline std::set<std::string> ServiceFlagNames() {
  std::set<std::string> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string file = flag->Filename();
    if (absl::EndsWith(file, "_flags.cc") || absl::EndsWith(file, "rpc/service_main.cc")) {
      names.emplace(name);
    }
  }
  return names;
}

// "--name=value" split into name and value; fails the test on anything else.
inline std::pair<std::string, std::string> SplitFlagArg(const std::string& arg) {
  const size_t eq = arg.find('=');
  EXPECT_TRUE(absl::StartsWith(arg, "--") && eq != std::string::npos) << arg;
  if (eq == std::string::npos) return {arg, ""};
  return {arg.substr(2, eq - 2), arg.substr(eq + 1)};
}

// Every flag of ServiceFlagNames() appears in `argv` exactly once, and
// `argv` names no other.
inline void ExpectSpellsEveryServiceFlagOnce(const std::vector<std::string>& argv) {
  std::map<std::string, int> spelled;
  for (const std::string& arg : argv) ++spelled[SplitFlagArg(arg).first];
  const std::set<std::string> defined = ServiceFlagNames();
  ASSERT_FALSE(defined.empty());
  for (const std::string& name : defined) {
    EXPECT_EQ(spelled[name], 1) << "--" << name << " is a flag of the binary; ToArgv spells it "
                                << spelled[name] << " times";
  }
  for (const auto& [name, count] : spelled) {
    EXPECT_EQ(defined.count(name), 1u)
        << "ToArgv spells --" << name << ", not a flag of the binary";
  }
}

// Sets the flags from `argv` ("--name=value" words, as ToArgv spells them),
// value by value as the binary's parser does, and checks their ranges.
inline void ParseFlagArgs(const std::vector<std::string>& argv) {
  for (const std::string& arg : argv) {
    const auto [name, value] = SplitFlagArg(arg);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    ASSERT_NE(flag, nullptr) << arg;
    std::string error;
    ASSERT_TRUE(flag->ParseFrom(value, &error)) << arg << ": " << error;
  }
  const absl::Status ranges = CheckFlagRanges();
  EXPECT_TRUE(ranges.ok()) << ranges;
}

// `sample` (an options struct with every field off its default) survives
// ToArgv, parsing and FromFlags (`from_flags`), every flag of the binary
// included: each one is set off its default by the parse, and FromFlags
// gives back the same command line.
template <typename Options, typename FromFlags>
void ExpectRoundTrip(const Options& sample, FromFlags from_flags) {
  absl::FlagSaver restore_flags;
  const std::vector<std::string> argv = sample.ToArgv();
  ExpectSpellsEveryServiceFlagOnce(argv);
  ParseFlagArgs(argv);
  for (const std::string& name : ServiceFlagNames()) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    EXPECT_NE(flag->CurrentValue(), flag->DefaultValue())
        << "the sample leaves --" << name << " at its default, so it proves nothing for it";
  }
  const Options parsed = from_flags();
  EXPECT_EQ(parsed.ToArgv(), argv);
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_SERVICE_FLAGS_H_
