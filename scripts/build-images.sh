#!/usr/bin/env bash
# Builds the project's container images from binaries cargo has already built, with no registry
# and no Docker: the base root file systems come from Debian bookworm packages (mmdebstrap, using
# this machine's apt sources), buildah turns them into local base images, and
# deploy/images/Containerfile.* add the binaries on top.
#
#   scripts/build-images.sh [--bin-dir DIR] [--out-dir DIR] [--tag TAG] [--cache-dir DIR]
#                           [--images "controller node heketi-server"]
#
#   --bin-dir DIR    where gluster-csi-controller, gluster-csi-node and heketi-server are
#                    (default target/x86_64-unknown-linux-gnu/release, the static
#                    executables scripts/build-release.sh builds). Debug builds are fine: the
#                    binaries are copied and stripped of debug info on the copy; the originals
#                    are never touched.
#   --out-dir DIR    where the image archives go (default target/images)
#   --tag TAG        image tag (default: v + the version the binaries report with --version,
#                    e.g. v0.1.0, which is also the tag the manifests in deploy/kubernetes use)
#   --cache-dir DIR  cached root file systems (default target/images/cache)
#   --images LIST    which images to build (default "controller node heketi-server")
#
# Results (names fixed, tag from --tag):
#   localhost/gluster-csi-controller:TAG  -> OUT/gluster-csi-controller.tar, .oci.tar
#   localhost/gluster-csi-node:TAG        -> OUT/gluster-csi-node.tar, .oci.tar
#   localhost/heketi-server:TAG           -> OUT/heketi-server.tar, .oci.tar
# NAME.tar is a docker-archive that keeps the image name: `docker load`,
# `ctr -n k8s.io images import` and the test cluster's load-image.sh accept it; NAME.oci.tar is
# the same image as an OCI archive (`skopeo copy oci-archive:F docker://REGISTRY/…`). Pods use
# the name as is, with imagePullPolicy IfNotPresent or Never.
#
# Base images (made once, then reused while their recipe and the apt sources stay the same):
#   localhost/gluster-csi-base-runtime:bookworm  libc6 + libgcc-s1 only, no shell (controller)
#   localhost/gluster-csi-base-gluster:bookworm  Debian's essential set + GlusterFS client, CLI,
#                                                mount, ssh client (node and heketi-server share
#                                                it, so a node stores its layer once)
# Each recipe is hashed (suite, variant, package list, options, hooks, apt sources); the
# mmdebstrap tarball is cached as CACHE/base-<base>-<hash>.tar and the base image carries the
# hash in a label, so a second run neither calls mmdebstrap nor rebuilds a base. Delete the
# cache directory and `buildah rmi` the base to pick up newer Debian packages.
#
# Environment:
#   APT_SOURCES     apt source files (one-line or deb822 format) or mirror URLs for
#                   mmdebstrap, space-separated (default: every file among
#                   /etc/apt/sources.list and /etc/apt/sources.list.d/*.list|*.sources
#                   that is not empty or only comments)
#   STORAGE_DRIVER  buildah's storage driver (buildah reads it itself; default: its own
#                   configuration, overlay on Debian). Use the same value on every run.
# buildah's default store (/var/lib/containers/storage) is used on purpose, not the k8s test
# cluster's private store: up.sh empties that one (`buildah rmi -a`) after each start.
#
# Must run as root (mmdebstrap's root mode, buildah mount). Installs mmdebstrap, buildah and
# binutils with apt-get when they are missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=build-images.sh
SUITE=bookworm
T_START=$(date +%s)

say() { echo "[$PROG $(date +%T)] $*"; }
die() { echo "$PROG: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ------------------------------------------------------------------------------ arguments
BIN_DIR=$ROOT/target/x86_64-unknown-linux-gnu/release
OUT_DIR=$ROOT/target/images
CACHE_DIR=
TAG=
IMAGES="controller node heketi-server"
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir|--out-dir|--tag|--cache-dir|--images)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --bin-dir) BIN_DIR=$(realpath -m -- "$2") ;;
        --out-dir) OUT_DIR=$(realpath -m -- "$2") ;;
        --cache-dir) CACHE_DIR=$(realpath -m -- "$2") ;;
        --tag) TAG=$2 ;;
        --images) IMAGES=$2 ;;
      esac
      shift 2 ;;
    --bin-dir=*) BIN_DIR=$(realpath -m -- "${1#*=}"); shift ;;
    --out-dir=*) OUT_DIR=$(realpath -m -- "${1#*=}"); shift ;;
    --cache-dir=*) CACHE_DIR=$(realpath -m -- "${1#*=}"); shift ;;
    --tag=*) TAG=${1#*=}; shift ;;
    --images=*) IMAGES=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
CACHE_DIR=${CACHE_DIR:-$OUT_DIR/cache}

# What each image is made of: binary, Containerfile, base, archive name.
image_binary() { case $1 in controller) echo gluster-csi-controller ;; node) echo gluster-csi-node ;; heketi-server) echo heketi-server ;; esac; }
image_base() { case $1 in controller) echo runtime ;; *) echo gluster ;; esac; }
for img in $IMAGES; do
  case $img in controller|node|heketi-server) ;; *) die "unknown image '$img' (known: controller node heketi-server)" ;; esac
done
[ -n "${IMAGES// /}" ] || die "--images is empty"

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root and buildah mount need it)"

for img in $IMAGES; do
  b=$BIN_DIR/$(image_binary "$img")
  if [ ! -f "$b" ] || [ ! -x "$b" ]; then
    die "missing binary $b (build it first with scripts/build-release.sh, or pass --bin-dir)"
  fi
done

# ------------------------------------------------------------------------------ host tools
# command -> Debian package that provides it
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >"$1" 2>&1; }
  aptlog=$(mktemp)
  if ! apt_install "$aptlog"; then
    # the package lists may be stale or absent: refresh them once and retry
    apt-get update -q >>"$aptlog" 2>&1 || true
    apt_install "$aptlog" || { cat "$aptlog" >&2; rm -f "$aptlog"; die "could not install ${missing[*]} with apt-get"; }
  fi
  rm -f "$aptlog"
fi
for c in mmdebstrap buildah strip tar sha256sum flock; do
  command -v "$c" >/dev/null 2>&1 || die "$c is still missing after the installation step"
done

if [ -z "$TAG" ]; then
  # "gluster-csi-node 0.1.0" -> v0.1.0, from the first selected binary that answers
  ver=
  for img in $IMAGES; do
    ver=$("$BIN_DIR/$(image_binary "$img")" --version 2>/dev/null | awk 'NR==1 {print $2}') || true
    [ -z "$ver" ] || break
  done
  [ -n "$ver" ] || die "cannot read the version from the binaries in $BIN_DIR; pass --tag"
  TAG=v$ver
fi
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag '$TAG'"

# apt sources handed to mmdebstrap
if [ -z "${APT_SOURCES:-}" ]; then
  APT_SOURCES=
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -qv '^[[:space:]]*\(#\|$\)' "$f" && APT_SOURCES="$APT_SOURCES $f"
  done
  [ -n "$APT_SOURCES" ] || die "no apt sources found in /etc/apt/sources.list*; set APT_SOURCES"
fi
read -r -a SOURCES <<< "$APT_SOURCES"

mkdir -p "$OUT_DIR" "$CACHE_DIR"
# one build at a time per cache directory
exec 9>"$CACHE_DIR/.lock"
flock -n 9 || { say "another build holds $CACHE_DIR/.lock; waiting"; flock 9; }

# Working containers and the build context are removed however the script ends.
CONTAINERS=()
WORK=$(mktemp -d "$OUT_DIR/.work.XXXXXX")
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

new_container() { # image -> container id, registered for cleanup
  local c
  # --network none: the checks run offline, and buildah's default CNI network would add a
  # cni-podman0 bridge on 10.88.0.0/16, the pod network of the k8s test cluster (and of many
  # clusters), breaking the routes of the cluster's pods.
  c=$(buildah from --pull=never --network none -q "$1")
  CONTAINERS+=("$c")
  echo "$c"
}
drop_container() {
  local c=$1 i
  buildah rm "$c" >/dev/null
  for i in "${!CONTAINERS[@]}"; do [ "${CONTAINERS[$i]}" != "$c" ] || unset "CONTAINERS[$i]"; done
}
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }
# Removes a previous image that lost its last name to a rebuild, so repeated runs do not pile
# up unnamed images. An image still named, used by a container or the parent of another image
# stays (an old base is retried at the end, once the images built on it are replaced).
STALE=()
drop_if_unnamed() {
  local id=$1
  [ -n "$id" ] || return 0
  if [ -z "$(buildah images --noheading --filter "id=$id" --format '{{.Name}}' 2>/dev/null | grep -v '<none>' || true)" ]; then
    buildah rmi "$id" >/dev/null 2>&1 || true
  fi
}

# ------------------------------------------------------------------------------ base recipes
# Documentation, manual pages, translations, shell completions and iconv modules are left out
# by dpkg itself (path-exclude), which keeps the package database consistent. Copyright files
# stay.
SLIM=(
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/bash-completion/*'
  # glibc's iconv modules for legacy character sets (~8 MB): nothing in the images converts
  # text with iconv, and UTF-8, ASCII and Latin-1 are built into libc itself
  --dpkgopt='path-exclude=/usr/lib/*/gconv/*'
)
# Hook scripts run under sh with the root file system in $1 (single quotes on purpose). They
# must leave apt's and dpkg's state alone, mmdebstrap still cleans it up after them; what an
# image does not need of it is left out when the tarball is imported (SKIP below).
# TIDY (both bases) removes the resolv.conf and hostname mmdebstrap copies from the host (the
# container runtime provides both), and the logs and backup files of the package installation.
# shellcheck disable=SC2016
TIDY='rm -f "$1/etc/resolv.conf" "$1/etc/hostname" "$1"/var/log/*.log "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old'

# runtime: what a dynamically linked Rust program needs and nothing else. The extract variant
# only unpacks libc6 and libgcc-s1 (and their dependency gcc-12-base): no maintainer scripts, no
# dpkg database, no shell, so files can simply be left out. (mmdebstrap runs no customize hooks
# for this variant, hence extract hooks.) The hook adds:
#  - /etc/passwd and /etc/group naming root and nonroot (65532, the user the controller runs as);
#  - nsswitch.conf, so that glibc reads /etc/hosts before asking DNS;
#  - the CA bundle update-ca-certificates would make by default (all of Mozilla's
#    certificates). It costs ~220 KB and lets the controller reach an https Heketi with a
#    publicly signed certificate without a CA file. The ca-certificates package is not
#    installed (it would pull in openssl, debconf and perl); it is only downloaded and read.
# shellcheck disable=SC2016
RUNTIME_HOOK='set -e
  printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" > "$1/etc/passwd"
  printf "root:x:0:\nnonroot:x:65532:\n" > "$1/etc/group"
  printf "passwd: files\ngroup: files\nhosts: files dns\n" > "$1/etc/nsswitch.conf"
  mkdir -p "$1/root" "$1/home/nonroot" "$1/tmp" "$1/etc/ssl/certs"
  chown 65532:65532 "$1/home/nonroot"; chmod 0700 "$1/root"; chmod 1777 "$1/tmp"
  d=$(mktemp -d); chmod 0755 "$d"   # apt downloads as user _apt
  ( cd "$d" && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download -q ca-certificates >/dev/null )
  dpkg-deb --fsys-tarfile "$d"/ca-certificates_*.deb | tar -x -C "$d" ./usr/share/ca-certificates/mozilla
  cat "$d"/usr/share/ca-certificates/mozilla/*.crt > "$1/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$d"'

# gluster: the essential set (sh, coreutils, sed, grep, util-linux, dpkg, ...) plus the packages
# the node plugin and heketi-server run; why each one is there is in the Containerfiles. The
# merged-usr hook installs the small usr-is-merged marker instead of the usrmerge package,
# which would bring perl (~50 MB) along.
GLUSTER_PACKAGES="glusterfs-client,glusterfs-cli,mount,mawk,attr,openssh-client"
# The byte code python3's maintainer scripts compile (~17 MB of __pycache__) is not in dpkg's
# file lists and is not needed: python rebuilds it on demand, and the mount path runs no python.
# shellcheck disable=SC2016
GLUSTER_HOOK='find "$1/usr" -xdev -type d -name __pycache__ -prune -exec rm -rf {} +'
# Run inside a new gluster base: every program /sbin/mount.glusterfs calls must be there.
# shellcheck disable=SC2016
GLUSTER_PROBE='sh -n /sbin/mount.glusterfs && for p in sh awk sed grep cut wc stat uname ls cat mv getfattr mount umount glusterfs gluster ssh cp; do command -v "$p" >/dev/null || { echo "missing in base: $p" >&2; exit 1; }; done'

# recipe BASE: sets MM_ARGS (mmdebstrap options) and SKIP (tarball paths not imported)
recipe() {
  case $1 in
    runtime)
      MM_ARGS=(--mode=root --variant=extract "--include=libc6,libgcc-s1" "${SLIM[@]}"
        --extract-hook="$TIDY" --extract-hook="$RUNTIME_HOOK")
      # no package manager in this image: apt's and dpkg's leftovers go
      SKIP=(./etc/apt ./var/lib/apt ./var/cache ./var/log ./etc/dpkg ./var/lib/dpkg) ;;
    gluster)
      MM_ARGS=(--mode=root --variant=essential --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        --include="$GLUSTER_PACKAGES" "${SLIM[@]}" --customize-hook="$TIDY" --customize-hook="$GLUSTER_HOOK")
      # apt is not installed (it is not in the essential set): its empty directories go
      SKIP=(./etc/apt ./var/lib/apt ./var/cache/apt ./var/log/apt) ;;
  esac
}

# Recipe hash: the recipe, the suite, mmdebstrap's version and the apt sources' content.
base_key() {
  recipe "$1"
  {
    echo "recipe 1 $1 $SUITE"
    mmdebstrap --version 2>/dev/null | head -n1
    printf '%s\n' "${MM_ARGS[@]}"
    echo "not imported: ${SKIP[*]}"
    local s
    for s in "${SOURCES[@]}"; do
      if [ -f "$s" ]; then echo "source file $s"; cat "$s"; else echo "source $s"; fi
    done
  } | sha256sum | cut -c1-16
}

# Makes sure localhost/gluster-csi-base-NAME:bookworm exists and was built from the current
# recipe; runs mmdebstrap only when the cached tarball is missing.
ensure_base() {
  local base=$1 key ref tar log have old c mnt
  key=$(base_key "$base")
  ref=localhost/gluster-csi-base-$base:$SUITE
  have=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.gluster-csi.base-key"}}' "$ref" 2>/dev/null || true)
  if [ "$have" = "$key" ]; then
    say "base $ref is current (key $key)"
    return 0
  fi
  tar=$CACHE_DIR/base-$base-$key.tar
  if [ -s "$tar" ]; then
    say "base $base: cached root file system $(basename "$tar")"
  else
    recipe "$base"
    log=$CACHE_DIR/base-$base-$key.log
    say "base $base: mmdebstrap $SUITE (key $key), log in $log"
    if ! mmdebstrap --format=tar "${MM_ARGS[@]}" "$SUITE" "$tar.part" "${SOURCES[@]}" >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      rm -f "$tar.part"
      die "mmdebstrap failed for base $base (full log: $log; APT_SOURCES selects other apt sources)"
    fi
    mv -f "$tar.part" "$tar"
    # older tarballs of this base are outdated now
    find "$CACHE_DIR" -maxdepth 1 -name "base-$base-*" ! -name "base-$base-$key.*" -delete
  fi

  say "base $base: importing into buildah as $ref"
  old=$(image_id "$ref")
  c=$(new_container scratch)
  mnt=$(buildah mount "$c")
  # /dev is provided by the container runtime: the tarball's device nodes are not needed
  recipe "$base"
  local skip=(--exclude='./dev/*') p
  for p in "${SKIP[@]}"; do skip+=(--exclude="$p"); done
  tar -C "$mnt" -xpf "$tar" --numeric-owner --xattrs --xattrs-include='*' "${skip[@]}"
  buildah umount "$c" >/dev/null
  buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label io.gluster-csi.base-key="$key" \
    --created-by "scripts/build-images.sh: mmdebstrap $SUITE ($base)" \
    "$c"
  buildah commit -q "$c" "$ref" >/dev/null
  drop_container "$c"
  if [ "$base" = gluster ]; then
    c=$(new_container "$ref")
    buildah run "$c" -- sh -c "$GLUSTER_PROBE" || die "base $ref lacks a program mount.glusterfs needs"
    drop_container "$c"
  fi
  [ "$old" = "$(image_id "$ref")" ] || STALE+=("$old")
}

# ------------------------------------------------------------------------------ build
bases=$(for img in $IMAGES; do image_base "$img"; done | sort -u)
for base in $bases; do ensure_base "$base"; done

REVISION=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BUILT=()
for img in $IMAGES; do
  bin=$(image_binary "$img")
  name=${bin}      # image and archive name: gluster-csi-controller, gluster-csi-node, heketi-server
  ref=localhost/$name:$TAG
  ctx=$WORK/$img
  mkdir -p "$ctx"
  # strip a copy: debug info goes, the symbol table stays (panics still name functions)
  strip --strip-debug -o "$ctx/$bin" "$BIN_DIR/$bin"
  chmod 0755 "$ctx/$bin"

  say "image $ref ($(du -m "$ctx/$bin" | cut -f1) MB binary)"
  old=$(image_id "$ref")
  buildah bud --pull=never -q --layers=false \
    -f "$ROOT/deploy/images/Containerfile.$img" \
    --label org.opencontainers.image.title="$name" \
    --label org.opencontainers.image.version="$TAG" \
    --label org.opencontainers.image.revision="$REVISION" \
    -t "$ref" "$ctx" >/dev/null
  [ "$old" = "$(image_id "$ref")" ] || drop_if_unnamed "$old"

  # the entry point must start inside the image (catches a missing library)
  c=$(new_container "$ref")
  buildah run "$c" -- "/usr/bin/$bin" --version >/dev/null || die "$ref: /usr/bin/$bin --version fails inside the image"
  drop_container "$c"

  # Two archives of the same image: docker-archive (what `docker load`, `ctr images import`
  # and the test cluster's load-image.sh take) and an OCI image layout archive (what
  # `skopeo copy oci-archive:…`, `podman load` and registries' tooling take).
  rm -f "$OUT_DIR/$name.tar" "$OUT_DIR/$name.tar.part" "$OUT_DIR/$name.oci.tar" "$OUT_DIR/$name.oci.tar.part"
  buildah push -q "$ref" "docker-archive:$OUT_DIR/$name.tar.part:$ref"
  mv -f "$OUT_DIR/$name.tar.part" "$OUT_DIR/$name.tar"
  buildah push -q "$ref" "oci-archive:$OUT_DIR/$name.oci.tar.part:$ref"
  mv -f "$OUT_DIR/$name.oci.tar.part" "$OUT_DIR/$name.oci.tar"
  BUILT+=("$img")
done
for old in "${STALE[@]}"; do drop_if_unnamed "$old"; done

# ------------------------------------------------------------------------------ report
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo
printf '%-40s %12s %12s %12s\n' IMAGE 'ARCHIVE MiB' 'ROOTFS MiB' 'BINARY MiB'
for img in "${BUILT[@]}"; do
  bin=$(image_binary "$img"); ref=localhost/$bin:$TAG
  c=$(new_container "$ref")
  rootfs=$(du -sbx "$(buildah mount "$c")" | cut -f1)
  buildah umount "$c" >/dev/null
  drop_container "$c"
  printf '%-40s %12s %12s %12s\n' "$ref" "$(mib "$(stat -c %s "$OUT_DIR/$bin.tar")")" "$(mib "$rootfs")" \
    "$(mib "$(stat -c %s "$WORK/$img/$bin")")"
done
echo
say "archives in $OUT_DIR; done in $(( $(date +%s) - T_START ))s"
