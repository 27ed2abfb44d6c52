#!/usr/bin/env bash
# Runs csi-sanity (kubernetes-csi/csi-test) against a fresh gluster-csi testbed: real Gluster
# hosts, heketi-server, the controller and the node plugin, all on this machine. Run as root.
#
#   tests/csi-sanity.sh [csi-sanity flags...]      e.g. --ginkgo.v, --ginkgo.focus=Node
#
# csi-sanity must be on PATH; see "csi-sanity" in README.md for how to install it. Every test
# that applies to the driver's capabilities runs; none is skipped by name.
#
# Environment:
#   GLUSTER_CSI_BIN_DIR   directory with the project's binaries; unset: `cargo build` here
#   SANITY_VOLUME_GIB     size of the test volumes in GiB (default 1)
#   SANITY_EXPAND_GIB     size they are expanded to in GiB (default SANITY_VOLUME_GIB + 1)
#   SANITY_KEEP=1         leave the testbed and the work directory for a post-mortem
#
# The driver runs as two processes with a socket each, and only the controller advertises the
# Controller service. csi-sanity reads that from --csi.endpoint's Identity and skips its two
# end-to-end Node tests (create → stage → publish → stats, once and ×10) without it, so
# --csi.endpoint is a combined socket (`gluster-csi-testbed combined-endpoint`): Identity and
# Controller calls forwarded to the controller, Node calls to the node plugin, unchanged.
#
# The testbed's controller has a default Heketi backend with the admin key (--heketi-key-file),
# so it needs no secret. The script passes the key as Kubernetes would anyway, through the CSI
# secrets of the controller calls (the keys `key` and `user` of the Secret that
# deploy/kubernetes/overlays/example generates), which exercises the credentials path of a
# real cluster. The node calls get no secret: the node plugin never talks to Heketi.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gib=$((1024 * 1024 * 1024))
volume_gib="${SANITY_VOLUME_GIB:-1}"
expand_gib="${SANITY_EXPAND_GIB:-$((volume_gib + 1))}"

if [ "$(id -u)" -ne 0 ]; then
  echo "csi-sanity.sh: run as root (the testbed creates network namespaces, runs glusterd and mounts FUSE)" >&2
  exit 1
fi

if ! command -v csi-sanity >/dev/null 2>&1; then
  cat >&2 <<'EOF'
csi-sanity.sh: csi-sanity is not on PATH. Install it (Go 1.22 or newer) with

    go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.4.0

which puts it in $(go env GOPATH)/bin, or build it from a checkout of
https://github.com/kubernetes-csi/csi-test (`make build-sanity` or
`go build -o csi-sanity ./cmd/csi-sanity`), then put its directory on PATH.
EOF
  exit 2
fi

if [ -n "${GLUSTER_CSI_BIN_DIR:-}" ]; then
  bin_dir="$GLUSTER_CSI_BIN_DIR"
else
  echo "csi-sanity.sh: building the binaries (cargo build --workspace --bins)"
  (cd "$repo" && cargo build --workspace --bins)
  bin_dir="$repo/target/debug"
fi
testbed="$bin_dir/gluster-csi-testbed"

work="$(mktemp -d /tmp/gcsi-sanity.XXXXXX)"
state_dir="$work/tb"

proxy_pid=""

finish() {
  local rc=$?
  if [ -n "$proxy_pid" ]; then
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  if [ "${SANITY_KEEP:-0}" = 1 ]; then
    echo "csi-sanity.sh: kept the testbed ($testbed down --state-dir $state_dir) and $work"
  else
    "$testbed" down --state-dir "$state_dir" >/dev/null || rc=1
    rm -rf "$work"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$testbed" up --state-dir "$state_dir"
# HEKETI_KEY, HEKETI_USER, CONTROLLER_ENDPOINT, NODE_ENDPOINT.
# shellcheck disable=SC1091
. "$state_dir/testbed.env"

plugin_socket="$work/plugin.sock"
"$testbed" combined-endpoint --listen "unix://$plugin_socket" \
  --controller "$CONTROLLER_ENDPOINT" --node "$NODE_ENDPOINT" >"$work/combined-endpoint.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do
  [ -S "$plugin_socket" ] && break
  kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/combined-endpoint.log" >&2; exit 1; }
  sleep 0.1
done
[ -S "$plugin_socket" ] || { echo "csi-sanity.sh: the combined endpoint did not start" >&2; exit 1; }

# YAML single-quoted scalar: '' stands for '.
quoted_key="'${HEKETI_KEY//\'/\'\'}'"
secrets="$work/secrets.yaml"
(
  umask 077
  for call in CreateVolumeSecret DeleteVolumeSecret ControllerExpandVolumeSecret \
    ControllerValidateVolumeCapabilitiesSecret; do
    printf '%s:\n  user: %s\n  key: %s\n' "$call" "$HEKETI_USER" "$quoted_key"
  done >"$secrets"
)

parameters="$work/parameters.yaml"
printf 'volumetype: "replicate:3"\n' >"$parameters"

# Both must not exist yet: csi-sanity creates them (and the driver creates <mountdir>/target).
mountdir="$work/mount"
stagingdir="$work/staging"

csi-sanity \
  --csi.endpoint "unix://$plugin_socket" \
  --csi.controllerendpoint "$CONTROLLER_ENDPOINT" \
  --csi.secrets "$secrets" \
  --csi.testvolumeparameters "$parameters" \
  --csi.testvolumesize "$((volume_gib * gib))" \
  --csi.testvolumeexpandsize "$((expand_gib * gib))" \
  --csi.mountdir "$mountdir" \
  --csi.stagingdir "$stagingdir" \
  "$@"
