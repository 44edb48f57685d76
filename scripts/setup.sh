#!/usr/bin/env bash
# Installs what Kiseki's build, tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v losetup >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# The FUSE mount and the tools its tests drive it with.
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v bindfs >/dev/null 2>&1 || need_apt+=(bindfs)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; this project builds with the machine's Rust toolchain (rustc 1.95)" >&2
  exit 1
fi
# pjdfstest, the POSIX conformance suite the FUSE tests run on a mount, and the
# unprivileged user `tests` it switches to (only when running as root).
pjdfstest_root=/var/tmp/pjdfstest
if [ ! -x "$pjdfstest_root/bin/pjdfstest" ]; then
  echo "setup: installing pjdfstest 0.2.2 under $pjdfstest_root"
  cargo install --quiet --locked pjdfstest --version 0.2.2 --root "$pjdfstest_root"
fi
if [ "$(id -u)" = 0 ] && ! id tests >/dev/null 2>&1; then
  useradd --no-create-home --shell /usr/sbin/nologin tests
fi
