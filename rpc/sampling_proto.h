// SamplingParams (proto) -> SamplingOptions (engine). Header only: included
// by the services that link the engine; the rpc library itself has no torch.
#ifndef NANOSERVE_RPC_SAMPLING_PROTO_H_
#define NANOSERVE_RPC_SAMPLING_PROTO_H_

#include "engine/sampler.h"
#include "nanoserve/v1/common.pb.h"

namespace nanoserve {

// top_p 0 (proto3's default) means 1: keep all tokens.
inline SamplingOptions SamplingFromProto(const v1::SamplingParams& p) {
  SamplingOptions s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  s.top_p = p.top_p() == 0 ? 1.0 : p.top_p();
  s.seed = p.seed();
  return s;
}

inline v1::SamplingParams SamplingToProto(const SamplingOptions& s) {
  v1::SamplingParams p;
  p.set_temperature(s.temperature);
  p.set_top_k(s.top_k);
  p.set_top_p(s.top_p);
  p.set_seed(s.seed);
  return p;
}

}  // namespace nanoserve

#endif  // NANOSERVE_RPC_SAMPLING_PROTO_H_
