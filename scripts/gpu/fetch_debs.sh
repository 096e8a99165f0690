#!/usr/bin/env bash
# On the development machine: downloads the Debian packages the GPU machine
# lacks (gRPC, Protobuf, Abseil, GoogleTest, nlohmann-json, PCRE2,
# cpp-httplib, libmicrohttpd) into .debs/ (git-ignored), for a device call to carry;
# scripts/gpu/env.sh unpacks them there (shared/GPU.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs
cd .debs
apt-get download libgrpc29 libgrpc++1.51 libgrpc-dev libgrpc++-dev protobuf-compiler-grpc \
  libprotobuf32 libprotobuf-lite32 libprotobuf-dev libprotoc32 protobuf-compiler \
  libabsl20220623 libabsl-dev libre2-9 libre2-dev libc-ares2 libc-ares-dev zlib1g-dev \
  libssl3 libssl-dev libgtest-dev libgmock-dev googletest \
  nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli1 libbrotli-dev \
  libmicrohttpd-dev libmicrohttpd12
echo "fetch_debs: $(ls | wc -l) packages in .debs/"
