#!/usr/bin/env bash
# Fuzzes what faces the network for a bounded time each, starting from checked-in seed
# corpora: kiseki-net's frame decoder and body validation (net/wire/fuzz, target
# `decode`), the S3 gateway's request parsing (gateways/gateway/fuzz, target
# `request`) and the NFS gateway's record, RPC and XDR decoding (target `nfs`).
# Usage: scripts/fuzz.sh [seconds per target]
#
# The toolchain is the fixed stable one; cargo-fuzz passes nightly-only flags (-Z ...) to
# rustc, which RUSTC_BOOTSTRAP=1 allows on stable. Installs cargo-fuzz if missing. A crash
# leaves its input under FUZZ_DIR/artifacts/TARGET/ and fails the script; reproduce it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir FUZZ_DIR TARGET <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

target_dir="${KISEKI_FUZZ_TARGET_DIR:-/var/tmp/kiseki-fuzz-target}"
# fuzz_one FUZZ_DIR TARGET MAX_LEN
fuzz_one() {
    local fuzz_dir="$1" target="$2" max_len="$3"
    # The working corpus grows while fuzzing; it lives outside the clone and starts from
    # the seeds each time, so runs are repeatable and the checked-in corpus stays small.
    local corpus
    corpus="$(mktemp -d /tmp/kiseki-fuzz-corpus.XXXXXX)"
    cp "$fuzz_dir"/seeds/"$target"/* "$corpus"/
    # The crates forbid unsafe code, so AddressSanitizer adds little beyond cost: fuzz
    # with libFuzzer's coverage and panics as the oracle (debug assertions and overflow
    # checks on).
    echo "== cargo fuzz build ($target)"
    cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$target_dir/$target" --sanitizer none \
        --debug-assertions "$target"
    echo "== cargo fuzz run ($target, ${seconds} s)"
    cargo fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$target_dir/$target" --sanitizer none \
        --debug-assertions "$target" "$corpus" -- -max_total_time="$seconds" -max_len="$max_len" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
    rm -rf "$corpus"
}

fuzz_one net/wire/fuzz decode 8192
fuzz_one gateways/gateway/fuzz request 16384
fuzz_one gateways/gateway/fuzz nfs 65536
echo "== fuzzing found nothing in ${seconds} s per target"
