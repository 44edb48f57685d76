#!/usr/bin/env bash
# Builds Kiseki and runs a local cluster on file-backed devices: nodes, key server,
# control plane, S3 and NFS gateways (`kiseki up`).
# Extra arguments go to `kiseki up` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kiseki-target}"
cargo build --release --locked -p kiseki-cli -p kiseki-server -p kiseki-client-fuse -p kiseki-gateway -p kiseki-keyserver -p kiseki-control
exec "$CARGO_TARGET_DIR/release/kiseki" up "$@"
