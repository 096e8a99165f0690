#include "base/tls.h"

#include <algorithm>
#include <fstream>
#include <iterator>

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nanoserve {
namespace {

// The file's contents if it holds a PEM block whose label ends with `kind`
// ("CERTIFICATE" for "-----BEGIN CERTIFICATE-----", "PRIVATE KEY" for
// "-----BEGIN EC PRIVATE KEY-----", ...).
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    const std::string& kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot be read"));
  // At most 1 MiB: /dev/zero (or any endless stream) is refused, not read on.
  constexpr size_t kMaxPemBytes = 1 << 20;
  std::string pem(kMaxPemBytes + 1, '\0');
  in.read(pem.data(), static_cast<std::streamsize>(pem.size()));
  pem.resize(static_cast<size_t>(in.gcount()));
  if (pem.size() > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": over 1 MiB, not a PEM ", kind, " file"));
  }
  const std::string begin = "-----BEGIN ";
  for (size_t at = pem.find(begin); at != std::string::npos; at = pem.find(begin, at + 1)) {
    const size_t label = at + begin.size();
    const size_t end = pem.find("-----", label);
    if (end != std::string::npos &&
        absl::EndsWith(absl::string_view(pem).substr(label, end - label), kind)) {
      return pem;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " ", path, ": no PEM ", kind, " in the file"));
}

}  // namespace

absl::StatusOr<TransportCredentials> LoadTransportCredentials(const TlsOptions& options) {
  TransportCredentials credentials;
  if (!options.enabled()) {
    credentials.server = grpc::InsecureServerCredentials();
    credentials.channel = grpc::InsecureChannelCredentials();
    return credentials;
  }
  std::vector<std::string> missing;
  if (options.cert_file.empty()) missing.push_back("--tls_cert");
  if (options.key_file.empty()) missing.push_back("--tls_key");
  if (options.ca_file.empty()) missing.push_back("--tls_ca");
  if (!missing.empty()) {
    std::string names;
    for (const std::string& m : missing) names += (names.empty() ? "" : ", ") + m;
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS is half configured: ", names,
        " missing (give --tls_cert, --tls_key and --tls_ca together, or none for plaintext)"));
  }
  absl::StatusOr<std::string> cert = ReadPem("--tls_cert", options.cert_file, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls_key", options.key_file, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadPem("--tls_ca", options.ca_file, "CERTIFICATE");
  if (!ca.ok()) return ca.status();

  grpc::SslServerCredentialsOptions server(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  server.pem_root_certs = *ca;
  server.pem_key_cert_pairs.push_back({*key, *cert});
  grpc::SslCredentialsOptions channel;
  channel.pem_root_certs = *ca;
  channel.pem_private_key = *key;
  channel.pem_cert_chain = *cert;
  credentials.tls = true;
  credentials.server = grpc::SslServerCredentials(server);
  credentials.channel = grpc::SslCredentials(channel);
  return credentials;
}

bool PeerIdentity::HasName(const std::string& candidate) const {
  return std::find(names.begin(), names.end(), candidate) != names.end();
}

PeerIdentity PeerIdentityOf(const grpc::ServerContextBase& context) {
  PeerIdentity identity;
  identity.address = context.peer();
  if (const size_t colon = identity.address.rfind(':');
      colon != std::string::npos && absl::StartsWith(identity.address, "ip")) {
    identity.address.resize(colon);
  }
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return identity;
  identity.authenticated = true;
  for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      identity.names.emplace_back(value.data(), value.size());
    }
  }
  if (!identity.names.empty()) identity.name = identity.names.front();
  return identity;
}

std::string CallerKeyOf(const PeerIdentity& caller) {
  return caller.authenticated && !caller.name.empty() ? caller.name : caller.address;
}

}  // namespace nanoserve
