#!/usr/bin/env bash
# Builds the release binaries that the images ship and the benchmark measures:
#
#   scripts/build-release.sh [cargo build arguments, e.g. -p gluster-csi-node]
#
# into target/x86_64-unknown-linux-gnu/release/ (scripts/build-images.sh takes them from there).
#
# They are static position-independent executables (`-C target-feature=+crt-static`: glibc is
# linked in, only the parts used) with packed relative relocations (`-z pack-relative-relocs`).
# Measured in BENCHMARKS.md ("Static binaries"): each process keeps ~1.5-2.3 MiB less resident
# than the same code linked against the shared glibc, libm and libgcc_s (those libraries are
# mapped whole, and the 0.5 MiB table of ordinary relocations is read at every start). A static
# binary also runs on any x86_64 Linux, whatever its glibc: the mount agent runs on hosts. Host
# names resolve through /etc/hosts and DNS (glibc's built-in `files` and `dns`); other NSS
# modules named in nsswitch.conf are not loaded.
#
# `--target` is given explicitly so that these flags reach only the binaries, not the build
# scripts and proc-macros cargo runs on this machine (a proc-macro cannot be linked statically).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=x86_64-unknown-linux-gnu
[ "$(uname -m)" = x86_64 ] || { echo "build-release.sh: x86_64 only (this is $(uname -m))" >&2; exit 1; }
cd "$ROOT"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
  cargo build --release --locked --bins --target "$TARGET" "$@"
OUT=$ROOT/target/$TARGET/release
for b in gluster-csi-controller gluster-csi-node heketi-server; do
  [ -x "$OUT/$b" ] || continue
  if readelf -l "$OUT/$b" | grep -q 'Requesting program interpreter'; then
    echo "build-release.sh: $OUT/$b is dynamically linked; expected a static executable" >&2
    exit 1
  fi
done
echo "$OUT"
