#!/usr/bin/env bash
# Proves deploy/ on this host (Debian 12, root, podman; no Docker, no registry):
#   1. deploy/host_setup.sh (podman, buildah, podman-compose, base image)
#   2. builds the CPU image (deploy/Dockerfile) and checks what it is: non-root,
#      HEALTHCHECK, no compilers; its default command serves, answers a
#      generation from the host and stops gracefully on SIGTERM; builds the GPU
#      recipe (deploy/Dockerfile.gpu) with CPU stand-ins and runs it
#   3. compose: the three services in three containers on their own podman
#      network, a checkpoint from the mounted models folder; waits for health
#      (the compose healthchecks), streams a generation through decode from the
#      host, checks that a second prompt sharing the first one's prefix hits the
#      store across containers (decode -> prefill -> store over the network),
#      reads the store's stats from a fourth container; starts a second
#      prefill replica and waits for it to serve calls (a scale-up); restarts the store
#      (warm: the second prompt is still a hit; on a new address when podman
#      gives the new container one, and how long the clients take to find it);
#      stops decode during a long HTTP stream (`podman stop`: the stream ends
#      with an error event then [DONE], never silently); stops them
#   4. Kubernetes: renders overlays/cpu, plays it with `podman kube play` (two
#      prefill pods, two decode pods, the checkpoint in the PVC's volume),
#      streams generations through both decode pods and checks that both
#      prefill pods served calls (client-side round robin), tears it down
#   5. deploy/netns_check.sh with the image's binaries: the three services in
#      separate network namespaces joined by veth pairs (no containers)
# Exits 77 (skipped), saying why, where podman cannot run a container here (no
# user namespaces, no cgroups in a container...): steps 2-4 need it.
# Prints a summary (times, sizes) at the end and keeps logs in $SMOKE_OUT
# (default /var/tmp/nanoserve-smoke). Needs root. Heavy steps run under
# `nice -n ${NICE:-15}`; SMOKE_GPU_RECIPE=0 skips the GPU recipe's build (a
# second compile). The first image build compiles the project (~30 min
# on 2 cores), later ones reuse the layers and the ccache cache mount.
# scripts/ci_long.sh runs it; run it too after every change to deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${SMOKE_OUT:-/var/tmp/nanoserve-smoke}
IMAGE=${NANOSERVE_IMAGE:-localhost/nanoserve:cpu}
STANDIN_IMAGE=${IMAGE%:*}:gpu-standin
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:12}
NICE="nice -n ${NICE:-15}"
PROJECT=nanoserve-smoke
NET=${PROJECT}_nanoserve            # podman-compose names it <project>_<network>
KUBE_NET=nanoserve-kube
DECODE_PORT=${SMOKE_DECODE_PORT:-15053}   # host ports, away from a developer's 50053
METRICS_PORT=${SMOKE_METRICS_PORT:-15153}
HTTP_PORT=${SMOKE_HTTP_PORT:-15080}
SERVE_PORT=${SMOKE_SERVE_PORT:-15054}
rm -rf "$OUT" && mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

say() { echo "smoke: $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# The command line from the image, in the host's network namespace.
host_client() { podman run --rm --network host "$IMAGE" nanoserve "$@"; }
# ... and on a podman network, a container of its own.
net_client() { local net=$1; shift; podman run --rm --network "$net" "$IMAGE" nanoserve "$@"; }
json_field() {  # json_field FILE KEY...: a field of `generate --json` output
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2:]: d = d[k]
print(d)' "$@"
}
compose() {
  MODELS_DIR="$OUT/models" MODEL=models/gpt2 DECODE_PORT=$DECODE_PORT METRICS_PORT=$METRICS_PORT \
    HTTP_PORT=$HTTP_PORT NANOSERVE_IMAGE=$IMAGE podman-compose -p "$PROJECT" -f deploy/compose.yaml "$@"
}
cleanup() {
  set +e
  podman rm -f -t 0 nanoserve-smoke-serve nanoserve-smoke-standin nanoserve-smoke-prefill-2 >/dev/null 2>&1
  compose down >/dev/null 2>&1
  podman network rm -f "$NET" >/dev/null 2>&1
  podman volume rm -f "${PROJECT}_kv-snapshots" >/dev/null 2>&1
  for f in "$OUT/kube/decode.yaml" "$OUT/kube/backends.yaml"; do
    [ -f "$f" ] && podman kube play --down "$f" >/dev/null 2>&1
  done
  # The PVCs' volumes (the weights, the store's snapshots) and the emptyDir
  # podman turns into one shared volume: a second run's kube play refuses a
  # PVC whose volume is still there.
  podman volume rm -f nanoserve-models nanoserve-kv-snapshots tmp >/dev/null 2>&1
  podman network rm -f "$KUBE_NET" >/dev/null 2>&1
}
trap cleanup EXIT
cleanup

# --- 1. the host ---------------------------------------------------------------
deploy/host_setup.sh
scripts/fetch_vocab.sh
if ! podman run --rm "$BASE_IMAGE" true >"$OUT/podman-check.log" 2>&1; then
  say "SKIP: podman cannot run a container on this host ($(tail -1 "$OUT/podman-check.log")): the image, compose (the drain across podman stop, the store's warm restart) and kube play steps need one"
  exit 77
fi
note "host: $(. /etc/os-release; echo "$PRETTY_NAME"), $(nproc) cores, $(podman --version), $(podman-compose version 2>/dev/null | grep -m1 -o 'podman-compose version.*' || echo podman-compose)"

# --- 2. the image ---------------------------------------------------------------
say "building $IMAGE (logs: $OUT/build.log)"
t0=$(now)
$NICE podman build --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -f deploy/Dockerfile -t "$IMAGE" . >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; fail "image build"; }
note "image build: $(since "$t0") s ($(grep -c 'Using cache' "$OUT/build.log" || true) cached steps)"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
note "image $IMAGE: $((size / 1000000)) MB"
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
[ "$user" = "10001:10001" ] || fail "image user is '$user', not 10001:10001"
podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}' | grep -q 'nanoserve health' \
  || fail "image has no HEALTHCHECK (built without --format docker?)"
tools=$(podman run --rm "$IMAGE" sh -c 'for t in c++ gcc cmake make npm; do command -v $t; done; id -u' 2>/dev/null)
note "in the image: no compilers, make, cmake or npm; runs as uid $tools"
[ "$tools" = 10001 ] || fail "the runtime image has build tools or runs as another user: $tools"

say "default command (nanoserve serve) on 127.0.0.1:$SERVE_PORT"
t0=$(now)
podman run -d --name nanoserve-smoke-serve -p "127.0.0.1:$SERVE_PORT:50053" "$IMAGE" >/dev/null
host_client health --target="127.0.0.1:$SERVE_PORT" --timeout_s=180 || { podman logs nanoserve-smoke-serve; fail "default command not serving"; }
note "default command serving after $(since "$t0") s"
podman healthcheck run nanoserve-smoke-serve || fail "the image's HEALTHCHECK fails on its default command"
host_client generate --target="127.0.0.1:$SERVE_PORT" --prompt "The default command" \
  --max_new_tokens 8 --json >"$OUT/serve.json" || fail "generate against the default command"
[ "$(json_field "$OUT/serve.json" finished usage output_tokens)" = 8 ] || fail "default command: not 8 tokens"
t0=$(now)
podman stop -t 30 nanoserve-smoke-serve >/dev/null
code=$(podman inspect nanoserve-smoke-serve --format '{{.State.ExitCode}}')
note "default command: 8 tokens from the host; SIGTERM -> exit $code in $(since "$t0") s"
[ "$code" = 0 ] || { podman logs nanoserve-smoke-serve | tail; fail "default command exit code $code"; }
podman rm nanoserve-smoke-serve >/dev/null

# The GPU recipe with CPU stand-ins (no CUDA image registry or PyTorch index
# here): deploy/Dockerfile.gpu on localhost/debian:12 with Debian's CPU LibTorch.
# Checks its stages, the library collection and the runtime layout, not CUDA.
# SMOKE_GPU_RECIPE=0 skips it (a second full compile: ~25 min on 2 cores).
if [ "${SMOKE_GPU_RECIPE:-1}" = 0 ]; then
  note "GPU recipe with CPU stand-ins: skipped (SMOKE_GPU_RECIPE=0)"
else
  say "building the GPU recipe with CPU stand-ins (logs: $OUT/build-gpu-standin.log)"
  t0=$(now)
  $NICE podman build --format docker -f deploy/Dockerfile.gpu --build-arg CUDA_DEVEL_IMAGE="$BASE_IMAGE" \
    --build-arg CUDA_RUNTIME_IMAGE="$BASE_IMAGE" --build-arg TORCH_FROM=debian -t "$STANDIN_IMAGE" . \
    >"$OUT/build-gpu-standin.log" 2>&1 || { tail -30 "$OUT/build-gpu-standin.log"; fail "GPU recipe (stand-ins)"; }
  podman run -d --name nanoserve-smoke-standin -p "127.0.0.1:$SERVE_PORT:50053" "$STANDIN_IMAGE" \
    nanoserve serve --work_dir=/tmp >/dev/null   # its default command asks for cuda
  host_client health --target="127.0.0.1:$SERVE_PORT" --timeout_s=180 || fail "GPU recipe (stand-ins): not serving"
  host_client generate --target="127.0.0.1:$SERVE_PORT" --prompt "The stand-in" --max_new_tokens 8 --json \
    >"$OUT/standin.json" || fail "GPU recipe (stand-ins): generate"
  [ "$(json_field "$OUT/standin.json" finished usage output_tokens)" = 8 ] || fail "GPU recipe (stand-ins): not 8 tokens"
  podman rm -f -t 30 nanoserve-smoke-standin >/dev/null
  note "GPU recipe with CPU stand-ins: built in $(since "$t0") s, $(( $(podman image inspect "$STANDIN_IMAGE" --format '{{.Size}}') / 1000000 )) MB, served 8 tokens (CUDA itself not exercised)"
fi

# A checkpoint for the models folder / volume: GPT-2 124M as an HF checkpoint
# (random weights: none can be downloaded here; the loading path is the real one).
mkdir -p "$OUT/models"
podman run --rm --user 0 -v "$OUT/models:/out" "$IMAGE" \
  nanoserve export-hf --model random:gpt2 --out /out/gpt2 >"$OUT/export.log" 2>&1 || fail "export-hf"
chmod -R a+rX "$OUT/models"
note "checkpoint: $(du -sh "$OUT/models/gpt2" | cut -f1) in $OUT/models/gpt2 ($(ls "$OUT/models/gpt2" | tr '\n' ' '))"

# --- 3. compose -----------------------------------------------------------------
say "compose up (logs: $OUT/compose-*.log)"
t0=$(now)
compose up -d >"$OUT/compose-up.log" 2>&1 || { tail -20 "$OUT/compose-up.log"; fail "compose up"; }
declare -A CTR=([kv-store]=${PROJECT}_kv-store_1 [prefill]=${PROJECT}_prefill_1 [decode]=${PROJECT}_decode_1)
for s in kv-store prefill decode; do
  ok=0
  for _ in $(seq 90); do
    if podman healthcheck run "${CTR[$s]}" >/dev/null 2>&1; then ok=1; break; fi
    sleep 2
  done
  ((ok)) || { podman logs "${CTR[$s]}" 2>&1 | tail -20; fail "compose: $s not healthy"; }
done
note "compose: all three healthy (their compose healthchecks) $(since "$t0") s after up"
ips=""
for s in kv-store prefill decode; do
  c=${CTR[$s]}
  ip=$(podman inspect "$c" --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}")
  [ -n "$ip" ] || fail "compose: $s has no address on $NET"
  ips="$ips $s=$ip"
  [ "$(podman inspect "$c" --format '{{.HostConfig.RestartPolicy.Name}}')" = unless-stopped ] \
    || fail "compose: $s restart policy"
  [ "$(podman inspect "$c" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ] || fail "compose: $s rootfs not read-only"
  podman logs "$c" >"$OUT/compose-$s.log" 2>&1
done
note "compose: network $NET, one address each:$ips; memory limits (MB):$(for s in kv-store prefill decode; do echo -n " $s=$(( $(podman inspect "${CTR[$s]}" --format '{{.HostConfig.Memory}}') / 1048576 ))"; done)"
grep -q "model models/gpt2 (124M parameters)$" "$OUT/compose-prefill.log" || { cat "$OUT/compose-prefill.log"; fail "prefill did not load the mounted checkpoint"; }
[ -z "$(podman port "${CTR[kv-store]}")" ] || fail "compose: the store is published on the host"

PROMPT="The KV store keeps the pages of every prompt it has seen in a radix tree over their token ids, page by page, sixteen tokens to a page, and it lends them out under leases, so that a later prompt which begins with the same words as an earlier one"
host_client generate --target="127.0.0.1:$DECODE_PORT" --prompt "$PROMPT" --max_new_tokens 16 --json \
  >"$OUT/compose-1.json" || fail "compose: generate 1"
host_client generate --target="127.0.0.1:$DECODE_PORT" --prompt "$PROMPT reuses them." \
  --max_new_tokens 16 --json >"$OUT/compose-2.json" || fail "compose: generate 2"
p2=$(json_field "$OUT/compose-2.json" finished usage prompt_tokens)
c2=$(json_field "$OUT/compose-2.json" finished usage cached_prompt_tokens)
o1=$(json_field "$OUT/compose-1.json" finished usage output_tokens)
ttft1=$(json_field "$OUT/compose-1.json" finished timings ttft_ms)
ttft2=$(json_field "$OUT/compose-2.json" finished timings ttft_ms)
[ "$o1" = 16 ] || fail "compose: generate 1 made $o1 tokens, not 16"
((c2 >= 32)) || fail "compose: the second prompt reused $c2 cached tokens (expected the shared prefix, >= 32)"
note "compose: generate from the host: 16 tokens, TTFT ${ttft1} ms; the prompt + 3 tokens: $c2 of $p2 prompt tokens cached in the store, TTFT ${ttft2} ms"
net_client "$NET" stats --target=kv-store:50051 >"$OUT/compose-stats.json" || fail "compose: stats from a 4th container"
note "compose: store stats from a 4th container on $NET: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if "hit" in k or "pages" in k or "lookup" in k})' "$OUT/compose-stats.json")"
metrics=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics") || fail "compose: decode metrics not published"
grep -q '^nanoserve_decode_requests_total' <<<"$metrics" || fail "compose: no decode request counter in /metrics"

# A new prefill replica takes calls within a minute (a scale-up): a second
# prefill container on the network under the alias `prefill`, as compose's
# own; decode's connections to prefill close after MAX_CONNECTION_AGE (30 s),
# it resolves `prefill` again, finds both and balances calls over them.
# (podman-compose 1.0.3's `up --scale` does not add to a running service.)
podman run -d --name nanoserve-smoke-prefill-2 --network "$NET" --network-alias prefill \
  -v "$OUT/models:/opt/nanoserve/models:ro" "$IMAGE" \
  nanoserve-prefill --kv_store=kv-store:50051 --model=models/gpt2 --shutdown_grace_s=8 >/dev/null \
  || fail "compose: starting a second prefill replica"
t0=$(now)
ip2=$(podman inspect nanoserve-smoke-prefill-2 --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}")
served=0
for i in $(seq 90); do   # a generation a round until the new replica has served a Prefill call
  host_client generate --target="127.0.0.1:$DECODE_PORT" --prompt "A new replica, round $i." \
    --max_new_tokens 2 >/dev/null || fail "compose: generate while a prefill replica joins"
  served=$(curl -s --max-time 2 "http://$ip2:9152/metrics" | awk '$1 == "nanoserve_prefill_requests_total{code=\"OK\"}" {print $2}')
  [ "${served:-0}" != 0 ] && break
  (( $(python3 -c "import sys; print(int(float(sys.argv[1])))" "$(since "$t0")") > 90 )) && break
done
[ "${served:-0}" != 0 ] || { podman logs nanoserve-smoke-prefill-2 2>&1 | tail; fail "compose: the new prefill replica served no call within 90 s"; }
note "compose: a second prefill replica (alias prefill, $ip2) served its first call $(since "$t0") s after it was started (generation $i of the rounds)"
# It stays up (two prefill replicas from here on) until compose down.

# The store restarts warm, maybe on a new address: a graceful stop saves its
# cache to the volume kv-snapshots, a new container loads it; the clients
# (prefill, decode) find it by name again.
store_ip() { podman inspect "${CTR[kv-store]}" --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}"; }
old_ip=$(store_ip)
podman stop "${CTR[kv-store]}" >/dev/null      # SIGTERM; podman's 10 s stop timeout
podman logs "${CTR[kv-store]}" >"$OUT/compose-kv-store-1.log" 2>&1
grep -q 'snapshot saved' "$OUT/compose-kv-store-1.log" || { tail "$OUT/compose-kv-store-1.log"; fail "compose: the store saved no snapshot on stop"; }
t0=$(now)
compose up -d --force-recreate --no-deps kv-store >"$OUT/compose-recreate.log" 2>&1 || fail "compose: recreating the store"
new_ip=$(store_ip)
net_client "$NET" health --target=kv-store:50051 --timeout_s=60 >/dev/null || fail "compose: the new store is not serving"
served_after=$(since "$t0")
t1=$(now)   # the new store serves: from here on, how long until the clients use it
podman logs "${CTR[kv-store]}" >"$OUT/compose-kv-store-2.log" 2>&1
grep -q 'warm start' "$OUT/compose-kv-store-2.log" || { tail "$OUT/compose-kv-store-2.log"; fail "compose: the new store did not start warm"; }
c3=0 tries=0
for i in $(seq 40); do   # until decode and prefill use the new store (no fallback)
  host_client generate --target="127.0.0.1:$DECODE_PORT" --prompt "$PROMPT comes back ($i)." \
    --max_new_tokens 4 --json >"$OUT/compose-3.json" || fail "compose: generate after the store's restart"
  [ -z "$(json_field "$OUT/compose-3.json" finished fallback_reason)" ] && { c3=$(json_field "$OUT/compose-3.json" finished usage cached_prompt_tokens); tries=$i; break; }
  sleep 0.5
done
((c3 >= 32)) || fail "compose: after the store's restart the shared prefix was not a hit ($c3 cached tokens)"
where="the same address $new_ip (podman kept it: the new-address case not exercised)"
[ "$old_ip" != "$new_ip" ] && where="a new address ($old_ip -> $new_ip)"
note "compose: store restarted warm on $where: $(grep -o 'warm start: .*' "$OUT/compose-kv-store-2.log"); serving $served_after s after the recreate began (a container, a process, the snapshot); the clients used it $(since "$t1") s after it served (generation $tries of the retries), $c3 prompt tokens cached"

# Drain across `podman stop`: a stream longer than decode's grace
# (--shutdown_grace_s=8 in compose; podman SIGKILLs after 10 s) ends with an
# SSE error event (server_error, "retry") then [DONE], never a silent cut.
curl -sN --max-time 120 "http://127.0.0.1:$HTTP_PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "models/gpt2", "prompt": "The drain", "max_tokens": 1000, "temperature": 0, "ignore_eos": true, "stream": true}' \
  >"$OUT/compose-drain.sse" 2>"$OUT/compose-drain.err" &
curl_pid=$!
for _ in $(seq 300); do grep -q '^data: {' "$OUT/compose-drain.sse" && break; sleep 0.1; done
grep -q '^data: {' "$OUT/compose-drain.sse" || fail "compose: the long HTTP stream did not start"
t0=$(now)
podman stop "${CTR[decode]}" >/dev/null        # podman's default: SIGTERM, SIGKILL at 10 s
stop_s=$(since "$t0")
wait "$curl_pid" || true
code=$(podman inspect "${CTR[decode]}" --format '{{.State.ExitCode}}')
podman logs "${CTR[decode]}" >"$OUT/compose-decode.log" 2>&1
tokens=$(grep -c '"text"' "$OUT/compose-drain.sse" || true)
[ "$(grep '^data: ' "$OUT/compose-drain.sse" | tail -1)" = "data: [DONE]" ] \
  || { tail -3 "$OUT/compose-drain.sse"; fail "compose: the stream across podman stop was cut silently (no [DONE]) after $tokens events"; }
last=$(grep '^data: {' "$OUT/compose-drain.sse" | tail -1)
grep -q '"server_error"' <<<"$last" && grep -q 'retry' <<<"$last" \
  || fail "compose: the stream cut by the drain did not end with a server_error event saying to retry: $last"
[ "$code" = 0 ] || fail "compose: decode exit code $code"
note "compose: podman stop of decode during a 1000-token HTTP stream: $tokens events, then an error event (server_error, retry) and [DONE]; decode exit $code in $stop_s s ($(grep -o 'stopped in [0-9]* ms' "$OUT/compose-decode.log" | tail -1))"
podman rm -f -t 10 nanoserve-smoke-prefill-2 >/dev/null 2>&1
compose down >"$OUT/compose-down.log" 2>&1 || fail "compose down"
# The GPU and TLS overrides cannot run here (no GPU; main's binaries have no TLS
# flags): check that they merge into the commands they are meant to give.
gpu=$(podman-compose --dry-run -p "$PROJECT" -f deploy/compose.yaml -f deploy/compose.gpu.yaml up -d 2>&1)
[ "$(grep '^podman run' <<<"$gpu" | grep -- '--device=cuda' | grep -c 'nanoserve:gpu')" = 2 ] \
  || fail "compose.gpu.yaml: not two services on cuda with the GPU image"
tls=$(TLS_DIR=$OUT podman-compose --dry-run -p "$PROJECT" -f deploy/compose.yaml -f deploy/compose.tls.yaml up -d 2>&1)
[ "$(grep '^podman run' <<<"$tls" | grep -c -- '--tls_ca=/etc/nanoserve/tls/ca.crt')" = 3 ] \
  || fail "compose.tls.yaml: not three services with TLS"
note "compose: the GPU and TLS overrides merge (podman-compose --dry-run): 2 services on cuda, 3 with --tls_*"

# --- 4. Kubernetes through podman kube play ---------------------------------------
say "kube play (logs: $OUT/kube/)"
mkdir -p "$OUT/kube"
OUT_DIR="$OUT/kube/rendered" deploy/validate.sh | tee -a "$SUMMARY"
podman network create "$KUBE_NET" >/dev/null
prefill_pods=$(deploy/podman_kube.py "$OUT/kube/rendered/cpu.yaml" "$OUT/kube" "$IMAGE")
# The PVC nanoserve-models becomes a podman volume of that name: fill it.
podman kube play --network "$KUBE_NET" "$OUT/kube/pvc.yaml" >"$OUT/kube/play-pvc.log" 2>&1 || fail "kube play (PVC)"
podman run --rm --user 0 -v nanoserve-models:/m -v "$OUT/models:/src:ro" "$IMAGE" \
  sh -c 'cp -r /src/gpt2 /m/ && chmod -R a+rX /m' || fail "kube: filling the models volume"
t0=$(now)
podman kube play --network "$KUBE_NET" "$OUT/kube/backends.yaml" >"$OUT/kube/play-backends.log" 2>&1 \
  || { cat "$OUT/kube/play-backends.log"; fail "kube play (store, prefill)"; }
for pod in nanoserve-kv-store-pod-0 $prefill_pods; do
  port=50052; [[ $pod == *kv-store* ]] && port=50051
  net_client "$KUBE_NET" health --target="$pod:$port" --timeout_s=180 \
    || { podman pod logs "$pod" 2>&1 | tail -20; fail "kube: $pod not serving"; }
done
targets=""
declare -A POD_IP
for pod in $prefill_pods; do
  POD_IP[$pod]=$(podman pod inspect "$pod" --format '{{.InfraContainerID}}' | xargs podman inspect \
                   --format "{{(index .NetworkSettings.Networks \"$KUBE_NET\").IPAddress}}")
  targets="${targets:+$targets,}${POD_IP[$pod]}:50052"
done
deploy/podman_kube.py "$OUT/kube/rendered/cpu.yaml" "$OUT/kube" "$IMAGE" "ipv4:$targets"
podman kube play --network "$KUBE_NET" "$OUT/kube/decode.yaml" >"$OUT/kube/play-decode.log" 2>&1 \
  || { cat "$OUT/kube/play-decode.log"; fail "kube play (decode)"; }
decode_pods="nanoserve-decode-pod-0 nanoserve-decode-pod-1"
for pod in $decode_pods; do
  net_client "$KUBE_NET" health --target="$pod:50053" --timeout_s=180 \
    || { podman pod logs "$pod" 2>&1 | tail -20; fail "kube: $pod not serving"; }
done
note "kube: 1 store, 2 prefill, 2 decode pods on $KUBE_NET serving $(since "$t0") s after play; decode's --prefill=ipv4:$targets"
c=nanoserve-prefill-pod-0-prefill
note "kube: prefill pod as played: user $(podman inspect $c --format '{{.Config.User}}'), read-only root $(podman inspect $c --format '{{.HostConfig.ReadonlyRootfs}}'), memory limit $(( $(podman inspect $c --format '{{.HostConfig.Memory}}') / 1073741824 )) GiB, capabilities dropped: $(podman inspect $c --format "{{.HostConfig.CapDrop}}" | wc -w) (all of podman's default 14), model: $(podman logs $c 2>&1 | grep -o 'model .*' | head -1)"
i=0
for pod in $decode_pods $decode_pods $decode_pods $decode_pods; do
  i=$((i + 1))
  net_client "$KUBE_NET" generate --target="$pod:50053" --prompt "$PROMPT (request $i)" \
    --max_new_tokens 8 --json >"$OUT/kube/generate-$i.json" || fail "kube: generate through $pod"
  [ "$(json_field "$OUT/kube/generate-$i.json" finished usage output_tokens)" = 8 ] || fail "kube: $pod: not 8 tokens"
done
served=""
for pod in $prefill_pods; do
  n=$(curl -sf "http://${POD_IP[$pod]}:9152/metrics" | awk '/^nanoserve_prefill_requests_total/ {s += $NF} END {print s + 0}')
  served="$served $pod=${n:-0}"
  [ "${n:-0}" != 0 ] || fail "kube: $pod served no Prefill call (round robin over the prefill pods?)"
done
note "kube: 8 generations (8 tokens each), 4 through each decode pod; Prefill calls per prefill pod:$served"
cached=$(json_field "$OUT/kube/generate-8.json" finished usage cached_prompt_tokens)
note "kube: the 8th prompt had $cached prompt tokens cached in the store pod"
t0=$(now)
podman kube play --down "$OUT/kube/decode.yaml" >/dev/null
podman kube play --down "$OUT/kube/backends.yaml" >/dev/null
note "kube: torn down in $(since "$t0") s"

# --- 5. separate network namespaces, no containers ---------------------------------
BIN=$OUT/bin
mkdir -p "$BIN"
cid=$(podman create "$IMAGE")
podman cp "$cid:/opt/nanoserve/bin/." "$BIN/" && podman cp "$cid:/opt/nanoserve/data" "$OUT/" && podman rm "$cid" >/dev/null
NANOSERVE_VOCAB_DIR="$OUT/data/gpt2" deploy/netns_check.sh "$BIN" | tee "$OUT/netns.log" | tail -3
tail -1 "$OUT/netns.log" >>"$SUMMARY"

echo
echo "=== deploy/smoke.sh summary ($(date -u +%FT%TZ), $(hostname)) ==="
cat "$SUMMARY"
