#!/usr/bin/env bash
# Copies the shared libraries that the given binaries load (ldd, resolved
# through their RPATH) into DEST, except the C library family and the NVIDIA
# driver's own (libcuda, libnvidia-*: the container toolkit mounts the host's),
# so that a runtime stage needs no package manager: LD_LIBRARY_PATH=DEST.
# The runtime stages of deploy/Dockerfile and deploy/Dockerfile.gpu use it.
#   collect_libs.sh DEST BINARY...
# Libraries loaded with dlopen are not seen by ldd: copy those folders too
# (deploy/Dockerfile.gpu copies PyTorch's torch/lib and nvidia/*/lib whole).
set -euo pipefail
DEST=$1; shift
mkdir -p "$DEST"
if ldd "$@" | grep -q 'not found'; then
  ldd "$@" | grep 'not found' >&2; echo "collect_libs: missing libraries" >&2; exit 1
fi
ldd "$@" | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
  case "$name" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*) continue ;;
    libcuda.so*|libnvidia-*) continue ;;
  esac
  [ -e "$DEST/$name" ] || cp -L "$path" "$DEST/$name"
done
echo "collect_libs: $(ls "$DEST" | wc -l) libraries, $(du -sh "$DEST" | cut -f1) in $DEST"
