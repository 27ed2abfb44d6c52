#!/usr/bin/env bash
# Quickstart: brings the gluster-csi testbed up on this machine (as root).
#
#   scripts/quickstart.sh [--hosts N] [--no-controller] [--no-node]
#
# 1. installs GlusterFS from the distribution's packages when glusterd or mount.glusterfs is
#    missing (scripts/setup.sh),
# 2. builds every binary of the workspace,
# 3. runs `gluster-csi-testbed up`: N Gluster hosts (default 3) in network namespaces,
#    heketi-server with the hosts loaded, the controller and the node plugin on unix sockets,
# 4. ends with `gluster-csi-testbed demo`: a PersistentVolumeClaim of deploy/examples walked
#    through its whole life on a second, throw-away testbed (STATE_DIR-demo), each step checked.
#
# The state directory is $GLUSTER_CSI_TESTBED_DIR, by default /tmp/gluster-csi-testbed. Running
# the script again replaces the testbed there with a fresh one.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state_dir="${GLUSTER_CSI_TESTBED_DIR:-/tmp/gluster-csi-testbed}"

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (network namespaces, glusterd and FUSE mounts need it)" >&2
  exit 1
fi

if ! command -v glusterd >/dev/null 2>&1 || ! command -v mount.glusterfs >/dev/null 2>&1; then
  echo "quickstart: GlusterFS is missing; installing it"
  "$repo/scripts/setup.sh"
fi

echo "quickstart: building the binaries (cargo build --workspace --bins)"
(cd "$repo" && cargo build --workspace --bins)

testbed="$repo/target/debug/gluster-csi-testbed"
echo "quickstart: bringing the testbed up in $state_dir"
"$testbed" up --state-dir "$state_dir" "$@"

cat <<EOF

The testbed is up. Next:

  set -a; . $state_dir/testbed.env; set +a     # HEKETI_URL, HEKETI_USER, HEKETI_KEY, endpoints
  curl "\$HEKETI_URL/hello"                    # heketi-server answers
  $testbed status --state-dir $state_dir       # what runs: hosts, processes, mounts

CSI sockets (when started):
  controller   $state_dir/controller.sock
  node plugin  $state_dir/node.sock
Logs: $state_dir/logs/ (daemons) and $state_dir/h*/log/ (glusterd of each host).
The Gluster CLI of host 1 is the "gluster CLI on h1" line printed above (append e.g. "pool list").

Tear everything down (safe to repeat):
  $testbed down --state-dir $state_dir
EOF

echo "quickstart: the demo (gluster-csi-testbed demo), on a testbed of its own in ${state_dir}-demo"
"$testbed" demo --state-dir "${state_dir}-demo"
