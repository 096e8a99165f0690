// LoadTransportCredentials: all three PEM files or none; anything in
// between, or a file that is not what it should be, is refused with a
// message naming it.
#include "base/tls.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/test_util/temp_path.h"
#include "tests/test_util/tls_pki.h"

namespace nanoserve {
namespace tls_test {

TEST(TlsTest, AllThreeFilesOrNone) {
  auto none = LoadTransportCredentials({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->tls);
  EXPECT_NE(none->server, nullptr);
  EXPECT_NE(none->channel, nullptr);

  const std::string dir = ::nanoserve::testing::ProcessTempPath("tls_test_pki");
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  auto pki = testing::TestPki::Create(dir, {"svc"});
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto full = LoadTransportCredentials(pki->Options("svc"));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->tls);

  TlsOptions half = pki->Options("svc");
  half.key_file.clear();
  auto refused = LoadTransportCredentials(half);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("--tls_key"), std::string::npos) << refused.status();

  TlsOptions swapped = pki->Options("svc");
  swapped.key_file = swapped.cert_file;  // a certificate where the key should be
  refused = LoadTransportCredentials(swapped);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("PRIVATE KEY"), std::string::npos) << refused.status();

  TlsOptions missing = pki->Options("svc");
  missing.ca_file = dir + "/nonexistent.pem";
  refused = LoadTransportCredentials(missing);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("cannot be read"), std::string::npos);
}

}  // namespace tls_test
}  // namespace nanoserve
