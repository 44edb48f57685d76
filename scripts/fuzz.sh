#!/usr/bin/env bash
# Fuzzes kiseki-net's frame decoder and body validation (net/wire/fuzz, target `decode`)
# for a bounded time, starting from the checked-in seed corpus. Usage: scripts/fuzz.sh [seconds]
#
# The toolchain is the fixed stable one; cargo-fuzz passes nightly-only flags (-Z ...) to
# rustc, which RUSTC_BOOTSTRAP=1 allows on stable. Installs cargo-fuzz if missing. A crash
# leaves its input under net/wire/fuzz/artifacts/decode/ and fails the script; reproduce it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir net/wire/fuzz decode <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

fuzz_dir=net/wire/fuzz
target_dir="${KISEKI_FUZZ_TARGET_DIR:-/var/tmp/kiseki-fuzz-target}"
# The working corpus grows while fuzzing; it lives outside the clone and starts from the
# seeds each time, so runs are repeatable and the checked-in corpus stays small.
corpus="$(mktemp -d /tmp/kiseki-fuzz-corpus.XXXXXX)"
trap 'rm -rf "$corpus"' EXIT
cp "$fuzz_dir"/seeds/decode/* "$corpus"/

# The crate forbids unsafe code, so AddressSanitizer adds little beyond cost: fuzz with
# libFuzzer's coverage and panics as the oracle (debug assertions on, overflow checks too).
echo "== cargo fuzz build (decode)"
cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --sanitizer none --debug-assertions decode
echo "== cargo fuzz run (decode, ${seconds} s)"
cargo fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --sanitizer none --debug-assertions decode \
    "$corpus" -- -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
echo "== fuzzing found nothing in ${seconds} s"
