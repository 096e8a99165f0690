#!/usr/bin/env bash
# The long checks, for a nightly job or before a merge (docs/testing.md): every
# unit and integration test under ASan + UBSan, then each fuzzer for
# FUZZ_SECONDS (default 600) on its corpus, then deploy/smoke.sh (the image
# built and run, compose, kube play, the services in separate network
# namespaces; docs/deploy.md). About 1.5 hours on 2 cores, plus 30 minutes for
# the first image build (later ones reuse its layers and ccache).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/sanitize.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-600}"
# 77: podman cannot run containers on this host (smoke.sh says why): skipped.
deploy/smoke.sh || { rc=$?; [ "$rc" = 77 ] || exit "$rc"; }
