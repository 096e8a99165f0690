// Mutual TLS between the services, and who is calling.
//
// Every service binary and the `nanoserve` client take the same three PEM
// files (--tls_cert, --tls_key, --tls_ca; rpc/service_main.h): this side's
// certificate chain and private key, and the CA bundle the other side's
// certificate must chain to. All three set: the server requires a client
// certificate signed by the CA (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_
// CERTIFICATE_AND_VERIFY) and the channels it opens present the certificate
// and verify the server's against the CA (and its name against the address
// dialled: a service certificate names its DNS names or IP addresses as
// subject alternative names). None set: plaintext, for loopback development.
// Some but not all: a start-up error.
//
// A call's peer identity (PeerIdentityOf) is read from gRPC's AuthContext:
// the names of the certificate the peer presented.
//
// Thread safety: thread-safe (no state).
#ifndef NANOSERVE_BASE_TLS_H_
#define NANOSERVE_BASE_TLS_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"

namespace nanoserve {

struct TlsOptions {
  // This side's certificate chain (PEM): the leaf first.
  std::string cert_file;
  // Its private key (PEM).
  std::string key_file;
  // The certificates of the CAs a peer's certificate must chain to (PEM).
  std::string ca_file;

  // True when any file is named (Validate then requires all three).
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// The credentials of a service or client, built once at start.
struct TransportCredentials {
  bool tls = false;
  std::shared_ptr<grpc::ServerCredentials> server;
  std::shared_ptr<grpc::ChannelCredentials> channel;
};

// Reads the PEM files of `options` and builds both credentials: mutual TLS
// when all three files are named, plaintext when none is. INVALID_ARGUMENT
// naming what is missing when only some are named, or a file that cannot be
// read, is empty, or holds no PEM block of the kind expected (CERTIFICATE,
// PRIVATE KEY).
absl::StatusOr<TransportCredentials> LoadTransportCredentials(const TlsOptions& options);

// Who a call comes from.
struct PeerIdentity {
  // True when the call came over TLS with a verified client certificate;
  // false on a plaintext server, where callers are anonymous.
  bool authenticated = false;
  // The certificate's common name, or its first subject alternative name
  // if it has no common name; empty when not authenticated. Leases are
  // bound to this name.
  std::string name;
  // Every name of the certificate: its common names and subject alternative
  // names (DNS names, IP addresses, ...).
  std::vector<std::string> names;
  // The peer's address without its port ("ipv4:10.0.0.7", "ipv6:[::1]"):
  // who a plaintext caller is, for quotas.
  std::string address;

  // True if `candidate` is one of `names`.
  bool HasName(const std::string& candidate) const;
};

// The identity of the peer of a server call.
PeerIdentity PeerIdentityOf(const grpc::ServerContextBase& context);

// Who a caller is for quotas and fair shares: its certificate's name when it
// authenticated with one, else its address without the port (so a
// plaintext client's connections are one caller, whatever their ports).
std::string CallerKeyOf(const PeerIdentity& caller);

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_TLS_H_
