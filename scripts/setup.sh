#!/usr/bin/env bash
# Installs what the testbed needs on a Debian/Ubuntu machine: the GlusterFS server and FUSE
# client, iproute2 (network namespaces) and util-linux (unshare). Safe to run again: it installs
# only what is missing. Must run as root, like the testbed itself.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (the testbed creates network namespaces, runs glusterd and mounts FUSE)" >&2
  exit 1
fi

missing=()
command -v glusterd >/dev/null 2>&1 || missing+=(glusterfs-server)
command -v mount.glusterfs >/dev/null 2>&1 || [ -x /sbin/mount.glusterfs ] || missing+=(glusterfs-client)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v getfattr >/dev/null 2>&1 || missing+=(attr)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
if [ ! -e /dev/fuse ]; then
  echo "setup.sh: /dev/fuse is missing; the GlusterFS FUSE client cannot mount" >&2
  exit 1
fi

# Debian's package starts a glusterd in the root namespace when systemd runs; the testbed runs
# its own per namespace and needs none there.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now glusterd >/dev/null 2>&1 || true
fi

echo "setup.sh: ready ($(glusterd --version | head -n 1))"
