#!/usr/bin/env bash
# The services as on separate hosts, without containers: the KV store, prefill,
# decode and a client each in a network namespace of its own, each with one
# veth pair to a bridge in a fifth namespace (10.231.0.0/24, nothing beyond
# it), so every call between them crosses a real TCP/IP path between network
# stacks, not loopback. Checks: each service serves on its own address, is NOT
# reachable on the client's loopback, a generation streams from the client
# through decode (which calls prefill, which calls the store) and a second
# prompt with the same prefix reuses the store's pages. Made and removed here
# (namespaces, links, processes); needs root and iproute2.
#   deploy/netns_check.sh [BIN_DIR]     (default build/bin; deploy/smoke.sh
#                                        passes the image's binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${1:-build/bin}" && pwd)
for b in nanoserve nanoserve-kv-store nanoserve-prefill nanoserve-decode; do
  [ -x "$BIN/$b" ] || { echo "netns_check: no $BIN/$b" >&2; exit 1; }
done
command -v ip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2
TAG=nsv$$                                  # names unique to this run
WORK=$(mktemp -d /tmp/netns_check.XXXXXX)
declare -A ADDR=([kv]=10.231.0.11 [prefill]=10.231.0.12 [decode]=10.231.0.13 [client]=10.231.0.14)
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for n in kv prefill decode client lan; do ip netns del "$TAG-$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "netns_check: FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2; exit 1; }
in_ns() { local n=$1; shift; ip netns exec "$TAG-$n" "$@"; }

ip netns add "$TAG-lan"
in_ns lan ip link add br0 type bridge
in_ns lan ip link set br0 up
i=0
for n in kv prefill decode client; do
  i=$((i + 1))
  ip netns add "$TAG-$n"
  in_ns "$n" ip link set lo up
  # veth pair: eth0 in the node's namespace, p<i> on the bridge.
  ip link add "$TAG-e$i" type veth peer name "$TAG-p$i"
  ip link set "$TAG-e$i" netns "$TAG-$n"
  ip link set "$TAG-p$i" netns "$TAG-lan"
  in_ns "$n" ip link set "$TAG-e$i" name eth0
  in_ns "$n" ip addr add "${ADDR[$n]}/24" dev eth0
  in_ns "$n" ip link set eth0 up
  in_ns lan ip link set "$TAG-p$i" master br0
  in_ns lan ip link set "$TAG-p$i" up
done

MODEL=(--model=random:gpt2 --seed=0)
start() {  # start NODE BINARY FLAGS...: the service in its namespace, in the background
  local n=$1 bin=$2; shift 2
  ip netns exec "$TAG-$n" "$BIN/$bin" --metrics_listen= "$@" >"$WORK/$n.log" 2>&1 &
  PIDS+=($!)
}
start kv nanoserve-kv-store --listen="${ADDR[kv]}:50051" "${MODEL[@]}"
start prefill nanoserve-prefill --listen="${ADDR[prefill]}:50052" --kv_store="${ADDR[kv]}:50051" "${MODEL[@]}"
start decode nanoserve-decode --listen="${ADDR[decode]}:50053" --kv_store="${ADDR[kv]}:50051" \
  --prefill="${ADDR[prefill]}:50052" "${MODEL[@]}"

client() { in_ns client "$BIN/nanoserve" "$@"; }
for pair in kv:50051 prefill:50052 decode:50053; do
  n=${pair%%:*} port=${pair##*:}
  client health --target="${ADDR[$n]}:$port" --timeout_s=180 >/dev/null || fail "$n not serving on ${ADDR[$n]}:$port"
done
# Not loopback: nothing answers on the client's own 127.0.0.1.
if client health --target=127.0.0.1:50053 --timeout_s=2 >/dev/null 2>&1; then
  fail "something answers on the client namespace's loopback"
fi

PROMPT="Each of the three services runs in a network namespace of its own, and the calls between them"
client generate --target="${ADDR[decode]}:50053" --prompt "$PROMPT" --max_new_tokens 8 --json \
  >"$WORK/g1.json" || fail "generate 1"
client generate --target="${ADDR[decode]}:50053" --prompt "$PROMPT cross a bridge." \
  --max_new_tokens 8 --json >"$WORK/g2.json" || fail "generate 2"
read -r out1 cached2 prompt2 fetched2 < <(python3 -c 'import json, sys
a = json.load(open(sys.argv[1]))["finished"]["usage"]
b = json.load(open(sys.argv[2]))["finished"]["usage"]
print(a["output_tokens"], b["cached_prompt_tokens"], b["prompt_tokens"], b["fetched_prompt_tokens"])' \
  "$WORK/g1.json" "$WORK/g2.json")
[ "$out1" = 8 ] || fail "generate 1 made $out1 tokens, not 8"
((cached2 >= 16)) || fail "the second prompt reused $cached2 cached tokens (expected >= 16)"
((fetched2 > 0)) || fail "decode fetched no prompt tokens from the store"
echo "netns_check: ok: store ${ADDR[kv]}, prefill ${ADDR[prefill]}, decode ${ADDR[decode]}, client ${ADDR[client]} in 4 namespaces on a bridge; 8 tokens streamed; 2nd prompt: $cached2 of $prompt2 tokens cached, $fetched2 fetched across namespaces; nothing on the client's loopback"
