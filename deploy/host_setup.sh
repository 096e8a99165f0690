#!/usr/bin/env bash
# Makes a Debian 12 host (root or sudo, no Docker, no container registry) able to
# build and run the nanoserve images with Debian's own tools:
#   - installs podman, buildah, podman-compose and what they need;
#   - sets the two containers.conf settings this kind of host needs: ulimits the
#     kernel accepts (podman's defaults are refused) and runc (crun refuses mixed
#     cgroups v1/v2 hosts);
#   - makes the base image localhost/debian:12 with debootstrap from the Debian
#     mirror in /etc/apt/sources.list*, where no registry can give debian:12.
# Safe to run again: each step checks first. BASE_IMAGE names the image to make
# (default localhost/debian:12); SKIP_BASE_IMAGE=1 skips it (a host that can
# pull debian:12 from a registry).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-localhost/debian:12}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo

PKGS=(buildah podman podman-compose debootstrap uidmap runc slirp4netns fuse-overlayfs
      containernetworking-plugins golang-github-containernetworking-plugin-dnsname
      catatonit iproute2 python3-yaml)  # catatonit: the pause process of kube play pods
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "host_setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# containers.conf: add the two settings under their tables unless already set.
CONF=/etc/containers/containers.conf
$SUDO mkdir -p /etc/containers
$SUDO touch "$CONF"
set_key() {  # set_key TABLE KEY VALUE: KEY = VALUE under [TABLE], once
  local table=$1 key=$2 value=$3
  if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$CONF"; then return; fi
  if grep -Eq "^\[${table}\]" "$CONF"; then
    $SUDO sed -i "/^\[${table}\]/a ${key} = ${value}" "$CONF"
  else
    printf '\n[%s]\n%s = %s\n' "$table" "$key" "$value" | $SUDO tee -a "$CONF" >/dev/null
  fi
}
set_key containers default_ulimits '["nofile=20000:20000", "nproc=32768:32768"]'
set_key engine runtime '"runc"'

if [ "${SKIP_BASE_IMAGE:-0}" = 1 ] || $SUDO podman image exists "$BASE_IMAGE"; then
  exit 0
fi
# The first deb URI of the first bookworm source (one-line or deb822 format).
MIRROR=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
         | awk '/^[[:space:]]*#/ {next}
                /security/ {next}
                $1 == "deb" || $1 == "URIs:" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /var/tmp/nanoserve-rootfs.XXXXXX)
trap '$SUDO rm -rf "$ROOTFS"' EXIT
echo "host_setup: debootstrap bookworm from $MIRROR (a few minutes)"
$SUDO debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
# The security updates too, as the debian:12 image has them.
echo "deb http://deb.debian.org/debian-security bookworm-security main" \
  | $SUDO tee "$ROOTFS/etc/apt/sources.list.d/security.list" >/dev/null
$SUDO rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
$SUDO tar -C "$ROOTFS" -c . | $SUDO podman import \
  --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$BASE_IMAGE" >/dev/null
echo "host_setup: made $BASE_IMAGE"
