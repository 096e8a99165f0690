// A throwaway certificate authority for tests of mutual TLS, made with the
// openssl command line (scripts/setup.sh installs it): a CA and one P-256
// certificate per name, CN=<name>, with subject alternative names DNS:<name>,
// DNS:localhost and IP:127.0.0.1 (the services are dialled on loopback),
// valid two days, for both server and client use.
#ifndef NANOSERVE_TESTS_TEST_UTIL_TLS_PKI_H_
#define NANOSERVE_TESTS_TEST_UTIL_TLS_PKI_H_

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/tls.h"

namespace nanoserve::testing {

class TestPki {
 public:
  // Makes the CA and a certificate for each of `names` in `dir` (which
  // exists). INTERNAL with the command if openssl fails.
  static absl::StatusOr<TestPki> Create(const std::string& dir,
                                        const std::vector<std::string>& names) {
    TestPki pki(dir);
    {
      std::ofstream cnf(dir + "/ca.cnf");
      cnf << "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = nanoserve-test-ca\n"
             "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
             "keyUsage = critical,keyCertSign,cRLSign\n";
    }
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    if (absl::Status s =
            Run(absl::StrCat("openssl req -x509 -new ", ec, " -keyout ", dir, "/ca.key -out ",
                             pki.ca(), " -days 2 -config ", dir, "/ca.cnf -extensions v3_ca"));
        !s.ok()) {
      return s;
    }
    for (const std::string& name : names) {
      const std::string base = dir + "/" + name;
      {
        std::ofstream ext(base + ".ext");
        ext << "subjectAltName=DNS:" << name << ",DNS:localhost,IP:127.0.0.1\n"
            << "extendedKeyUsage=serverAuth,clientAuth\n";
      }
      if (absl::Status s = Run(absl::StrCat("openssl req -new ", ec, " -keyout ", base,
                                            ".key -out ", base, ".csr -subj /CN=", name));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = Run(absl::StrCat("openssl x509 -req -in ", base, ".csr -CA ", pki.ca(),
                                            " -CAkey ", dir, "/ca.key -CAcreateserial -out ", base,
                                            ".pem -days 2 -extfile ", base, ".ext"));
          !s.ok()) {
        return s;
      }
    }
    return pki;
  }

  std::string ca() const { return dir_ + "/ca.pem"; }
  std::string cert(const std::string& name) const { return dir_ + "/" + name + ".pem"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }

  // The TLS flags of a service presenting `name`'s certificate.
  std::vector<std::string> Flags(const std::string& name) const {
    return {"--tls_cert=" + cert(name), "--tls_key=" + key(name), "--tls_ca=" + ca()};
  }
  TlsOptions Options(const std::string& name) const { return {cert(name), key(name), ca()}; }
  // Channel credentials presenting `name`'s certificate.
  std::shared_ptr<grpc::ChannelCredentials> Channel(const std::string& name) const {
    return LoadTransportCredentials(Options(name)).value().channel;
  }

 private:
  explicit TestPki(std::string dir) : dir_(std::move(dir)) {}

  static absl::Status Run(const std::string& command) {
    const std::string quiet = command + " >/dev/null 2>&1";
    if (std::system(quiet.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("failed: ", command));
    }
    return absl::OkStatus();
  }

  std::string dir_;
};

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_TLS_PKI_H_
