#!/usr/bin/env python3
"""The NFS suite's load generator: one libnfs client (libnfs.so.13 through ctypes, the
library of nfs-cp) running one phase against one NFS URL, printing one JSON line.

    nfs_load.py URL write PATH BYTES      1 MiB pwrites, then fsync (COMMIT)
    nfs_load.py URL read PATH BYTES       1 MiB preads
    nfs_load.py URL create DIR COUNT      mkdir DIR, then COUNT creat + 4 KiB pwrite + close
    nfs_load.py URL stat DIR COUNT        COUNT stat64
    nfs_load.py URL remove DIR COUNT      COUNT unlink, then rmdir DIR

Output: {"operations": N, "bytes": B, "seconds": S, "p50_ms": X, "p99_ms": Y}.
"""

import ctypes
import json
import os
import sys
import time
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_uint64, c_void_p, create_string_buffer


class nfs_url(Structure):
    _fields_ = [("server", c_char_p), ("path", c_char_p), ("file", c_char_p)]


class nfs_stat_64(Structure):
    _fields_ = [
        (name, c_uint64) for name in
        "dev ino mode nlink uid gid rdev size blksize blocks atime mtime ctime atime_nsec mtime_nsec ctime_nsec used"
        .split()]


def connect(url):
    lib = ctypes.CDLL("libnfs.so.13")
    lib.nfs_init_context.restype = c_void_p
    lib.nfs_parse_url_dir.restype = POINTER(nfs_url)
    lib.nfs_parse_url_dir.argtypes = [c_void_p, c_char_p]
    lib.nfs_mount.argtypes = [c_void_p, c_char_p, c_char_p]
    lib.nfs_get_error.restype = c_char_p
    lib.nfs_get_error.argtypes = [c_void_p]
    lib.nfs_creat.argtypes = [c_void_p, c_char_p, c_int, POINTER(c_void_p)]
    lib.nfs_open.argtypes = [c_void_p, c_char_p, c_int, POINTER(c_void_p)]
    lib.nfs_pwrite.argtypes = [c_void_p, c_void_p, c_uint64, c_uint64, c_char_p]
    lib.nfs_pread.argtypes = [c_void_p, c_void_p, c_uint64, c_uint64, c_void_p]
    lib.nfs_fsync.argtypes = [c_void_p, c_void_p]
    lib.nfs_close.argtypes = [c_void_p, c_void_p]
    lib.nfs_stat64.argtypes = [c_void_p, c_char_p, POINTER(nfs_stat_64)]
    for name in ("nfs_mkdir", "nfs_rmdir", "nfs_unlink"):
        getattr(lib, name).argtypes = [c_void_p, c_char_p]
    context = lib.nfs_init_context()
    parsed = lib.nfs_parse_url_dir(context, url.encode())
    if not parsed or lib.nfs_mount(context, parsed.contents.server, parsed.contents.path) != 0:
        sys.exit(f"mount failed: {lib.nfs_get_error(context)}")
    return lib, context


def check(lib, context, status, what):
    if status < 0:
        sys.exit(f"{what}: {lib.nfs_get_error(context).decode()}")
    return status


def main():
    url, mode, path, amount = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lib, context = connect(url)
    latencies = []
    total_bytes = 0
    chunk = 1 << 20
    started = time.perf_counter()
    if mode in ("write", "read"):
        handle = c_void_p()
        if mode == "write":
            check(lib, context, lib.nfs_creat(context, path.encode(), 0o644, byref(handle)), "creat")
            data = os.urandom(chunk)
        else:
            check(lib, context, lib.nfs_open(context, path.encode(), 0, byref(handle)), "open")
            buffer = create_string_buffer(chunk)
        for offset in range(0, amount, chunk):
            begin = time.perf_counter()
            if mode == "write":
                done = check(lib, context, lib.nfs_pwrite(context, handle, offset, chunk, data), "pwrite")
            else:
                done = check(lib, context, lib.nfs_pread(context, handle, offset, chunk, buffer), "pread")
            latencies.append(time.perf_counter() - begin)
            total_bytes += done
        if mode == "write":
            check(lib, context, lib.nfs_fsync(context, handle), "fsync")
        lib.nfs_close(context, handle)
    else:
        directory = path.encode()
        if mode == "create":
            check(lib, context, lib.nfs_mkdir(context, directory), "mkdir")
        block = b"k" * 4096
        result = nfs_stat_64()
        for index in range(amount):
            name = directory + b"/f%06d" % index
            begin = time.perf_counter()
            if mode == "create":
                handle = c_void_p()
                check(lib, context, lib.nfs_creat(context, name, 0o644, byref(handle)), "creat")
                check(lib, context, lib.nfs_pwrite(context, handle, 0, 4096, block), "pwrite")
                lib.nfs_close(context, handle)
            elif mode == "stat":
                check(lib, context, lib.nfs_stat64(context, name, byref(result)), "stat")
            else:
                check(lib, context, lib.nfs_unlink(context, name), "unlink")
            latencies.append(time.perf_counter() - begin)
        if mode == "remove":
            check(lib, context, lib.nfs_rmdir(context, directory), "rmdir")
    seconds = time.perf_counter() - started
    latencies.sort()
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
    print(json.dumps({"operations": len(latencies), "bytes": total_bytes, "seconds": seconds,
                      "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}))


if __name__ == "__main__":
    main()
