#!/usr/bin/env bash
# Installs what the testbed needs on a Debian/Ubuntu machine: the GlusterFS server and FUSE
# client, iproute2 (network namespaces), util-linux (unshare, nsenter) and OpenSSH (each test
# host runs its own sshd; heketi-server reaches the hosts with ssh). Safe to run again: it installs
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
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# tests/tests/deploy.rs validates the manifests with kubernetes-validate (PyPI), installed into a
# virtualenv under the target directory: Debian's python3 needs venv and pip for that.
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start services here (openssh-server would start an sshd on port 22 of
  # the machine): a policy-rc.d that refuses, unless the machine already has one.
  policy_made=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -z "$policy_made" ] || rm -f /usr/sbin/policy-rc.d
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
