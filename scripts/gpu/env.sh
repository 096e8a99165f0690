# Sourced by the GPU scripts: unpacks the carried Debian packages (.debs/)
# into /opt/deps once and points the toolchain at them and at the machine's
# pip LibTorch (shared/GPU.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ ! -f /opt/deps/.unpacked ]; then
  mkdir -p /opt/deps
  for f in "$ROOT"/.debs/*.deb; do dpkg -x "$f" /opt/deps; done
  touch /opt/deps/.unpacked
fi
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_PATH=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/opt/deps/usr/share/pkgconfig
export PATH=/opt/deps/usr/bin:$PATH
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
BUILD="$ROOT/build-gpu"
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
# Waits up to 60 s for a service to listen on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
