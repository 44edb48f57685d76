#!/usr/bin/env bash
# The whole test suite: format, lints, every test (unit, property, crash, tidy), and a
# quick benchmark smoke run. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The target directory lives outside the clone so repeated runs on one machine are fast;
# nothing depends on it being there.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kiseki-target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== cargo test"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test --locked --workspace 2>&1 | tee "$test_log"
passed=$(grep '^test result:' "$test_log" | grep -o '[0-9]* passed' | awk '{sum += $1} END {print sum + 0}')
failed=$(grep '^test result:' "$test_log" | grep -o '[0-9]* failed' | awk '{sum += $1} END {print sum + 0}')

echo "== benchmark smoke (quick; figures are printed, never asserted)"
# `bench meta`, `io`, `fuse` and `s3` start kiseki-server (and kiseki-client-fuse,
# kiseki-gateway) processes: the binaries must sit beside kiseki.
cargo build --release --locked -p kiseki-cli -p kiseki-server -p kiseki-client-fuse -p kiseki-gateway -p kiseki-keyserver -p kiseki-control
smoke_device="/dev/shm/kiseki-bench-smoke.img"
trap 'rm -f "$smoke_device" "$test_log"' EXIT
"$CARGO_TARGET_DIR/release/kiseki" bench engine --device "$smoke_device" --size 1GiB --quick --json
"$CARGO_TARGET_DIR/release/kiseki" bench pipeline --quick --json
"$CARGO_TARGET_DIR/release/kiseki" bench meta --quick --json
"$CARGO_TARGET_DIR/release/kiseki" bench io --quick --json
"$CARGO_TARGET_DIR/release/kiseki" bench s3 --quick --json
if [ -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then
  "$CARGO_TARGET_DIR/release/kiseki" bench fuse --quick --json
else
  echo "bench fuse skipped: needs root and /dev/fuse"
fi
if [ "$(id -u)" = 0 ]; then
  "$CARGO_TARGET_DIR/release/kiseki" bench nfs --quick --json
else
  echo "bench nfs skipped: its baseline nfs-ganesha needs root"
fi
echo "== fuzz smoke (kiseki-net frames and bodies, S3 requests, NFS records; 30 s each, seeds in */fuzz/seeds)"
scripts/fuzz.sh 30
echo "== all tests passed"
echo "tests: $passed passed, $failed failed"
