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
# S3 gateway tests: rclone (Debian) beside the aws CLI and boto3 (PyPI, in a venv below).
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# NFS gateway tests and benchmark: libnfs's tools and library (nfs-cp, nfs-ls, nfs-cat,
# libnfs.so.13 for the ctypes clients), and the baseline nfs-ganesha with rpcbind.
command -v nfs-cp >/dev/null 2>&1 || need_apt+=(libnfs-utils)
command -v ganesha.nfsd >/dev/null 2>&1 || need_apt+=(nfs-ganesha nfs-ganesha-vfs)
command -v rpcbind >/dev/null 2>&1 || [ -x /usr/sbin/rpcbind ] || need_apt+=(rpcbind)
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
# The Python venv of the S3 tests: boto3 and the aws CLI from PyPI. Tests find it through
# KISEKI_VENV (default below) and skip nothing: a missing venv fails them.
venv=/var/tmp/kiseki-venv
if [ ! -x "$venv/bin/aws" ] || ! "$venv/bin/python" -c 'import boto3' >/dev/null 2>&1; then
  echo "setup: creating $venv (boto3, awscli)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check boto3 awscli
fi
# The baseline of `kiseki bench s3`: s3s-fs, a plain S3 server on a local directory.
s3s_fs_root=/var/tmp/s3s-fs
if [ ! -x "$s3s_fs_root/bin/s3s-fs" ]; then
  echo "setup: installing s3s-fs 0.14.1 under $s3s_fs_root"
  cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary --root "$s3s_fs_root"
fi
