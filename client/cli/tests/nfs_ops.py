#!/usr/bin/env python3
"""The NFS gateway's procedures and error codes, driven by real clients.

    nfs_ops.py checks PORT UNSQUASHED_PORT   every procedure through libnfs and a raw client, with
                                     the NFS3ERR code of each error case, per-export options
                                     (read-only, squashing, allowed clients), quotas, and
                                     RPC-level refusals of bad input
    nfs_ops.py before-restart PORT STATE   writes a file, leaves an unstable write
                                     uncommitted, saves handles and verifiers to STATE
    nfs_ops.py after-restart PORT STATE    the saved handles and cookie verifier still work,
                                     the write verifier changed, the committed data is there

Expects the exports /default/default (ids as sent), /default/ro (read-only),
/default/squashed (root squashed), /default/everyone (all squashed to 4242:4343),
/default/narrow (clients 127.0.0.1 only) and /default/quota (at most 5 inodes).
"""

import json
import os
import random
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nfs_client import (  # noqa: E402
    ACCES, BAD_COOKIE, BADHANDLE, BADTYPE, DQUOT, EXIST, FSINFO, FSSTAT, FILE_SYNC, ISDIR, MOUNT_PROGRAM,
    NAMETOOLONG, NFS_PROGRAM, NOENT, NOT_SYNC, NOTDIR, NOTEMPTY, NOTSUPP, OK, PATHCONF, ROFS, STALE,
    UNSTABLE, XDEV, Libnfs, Packer, Rpc, RpcError, list_all,
)


# Names made at the top of the default export carry this run's tag, so a run can follow
# another on the same cluster.
RUN = os.urandom(3).hex().encode()


def expect(what, got, wanted):
    if got != wanted:
        raise AssertionError(f"{what}: got {got}, expected {wanted}")
    print(f"ok  {what}")


def url(port, path):
    return f"nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}"


def refused(call):
    try:
        call()
    except RpcError as error:
        return (error.kind, error.status)
    return None


def rpc_level(port):
    rpc = Rpc(port)
    reply = rpc.call(NFS_PROGRAM, 0)
    expect("NFS NULL answers nothing", reply.data[reply.at:], b"")
    rpc.call(MOUNT_PROGRAM, 0)
    expect("unknown NFS procedure", refused(lambda: rpc.call(NFS_PROGRAM, 22)), ("accept", 3))
    expect("unknown program", refused(lambda: rpc.call(100004, 0)), ("accept", 1))
    expect("NFS version 4", refused(lambda: rpc.call(NFS_PROGRAM, 0, version=4)), ("accept", 2))
    expect("RPC version 3", refused(lambda: rpc.call(NFS_PROGRAM, 0, rpc_version=3)), ("rpc_mismatch", 2))
    expect("AUTH_NONE on GETATTR", refused(lambda: rpc.call(NFS_PROGRAM, 1, Packer().opaque(b"x").bytes(),
                                                            credential=(0, b""))), ("auth_error", 5))
    expect("RPCSEC_GSS flavor", refused(lambda: rpc.call(NFS_PROGRAM, 1, b"", credential=(6, b"\0" * 8))),
           ("auth_error", 2))
    expect("a credential that does not decode", refused(lambda: rpc.call(NFS_PROGRAM, 1, b"",
                                                                         credential=(1, b"\0\0"))), ("auth_error", 1))
    expect("truncated GETATTR arguments", refused(lambda: rpc.call(NFS_PROGRAM, 1, b"\0\0\0\x40")), ("accept", 4))
    expect("a 3000-byte handle", refused(lambda: rpc.call(NFS_PROGRAM, 1, Packer().opaque(b"h" * 3000).bytes())),
           ("accept", 4))
    # Garbage records: a reply (not a call) is dropped; the connection goes on.
    rpc.send_record(struct.pack(">II", 7, 1))
    rpc.call(NFS_PROGRAM, 0)
    print("ok  a record that is not a call is dropped")
    # An oversized record mark closes the connection; the server goes on serving others.
    rpc.sock.sendall(struct.pack(">I", 0x7FFFFFFF) + b"\0" * 64)
    try:
        rpc.recv_record()
        raise AssertionError("an oversized record mark must close the connection")
    except (ConnectionError, socket.timeout, OSError):
        print("ok  an oversized record mark closes the connection")
    rpc.close()
    truncated = socket.create_connection(("127.0.0.1", port))
    truncated.sendall(struct.pack(">I", 0x80000010) + b"\0\0\0")
    truncated.close()
    Rpc(port).call(NFS_PROGRAM, 0)
    print("ok  the server serves on after garbage")


def handles_and_errors(port):
    rpc = Rpc(port)
    expect("EXPORT lists the namespaces", "/default/default" in rpc.exports(), True)
    expect("MNT of no export", rpc.mount("/nobody/nothing")[0], NOENT)
    status, root = rpc.mount("/default/default")
    expect("MNT", status, OK)
    status, attributes = rpc.getattr(root)
    expect("GETATTR of the root", (status, attributes["type"]), (OK, 2))
    expect("LOOKUP of a missing name", rpc.lookup(root, b"missing")[0], NOENT)
    expect("LOOKUP of a 256-byte name", rpc.lookup(root, b"n" * 256)[0], NAMETOOLONG)
    status, directory = rpc.mkdir(root, b"errors-" + RUN)
    expect("MKDIR", status, OK)
    expect("MKDIR again", rpc.mkdir(root, b"errors-" + RUN)[0], EXIST)
    status, file = rpc.create(directory, b"file", how=1)
    expect("CREATE GUARDED", status, OK)
    expect("CREATE GUARDED of an existing name", rpc.create(directory, b"file", how=1)[0], EXIST)
    expect("CREATE UNCHECKED of an existing name", rpc.create(directory, b"file", how=0)[0], OK)
    expect("LOOKUP inside a file", rpc.lookup(file, b"x")[0], NOTDIR)
    expect("READ of a directory", rpc.read(directory, 0, 10)[0], ISDIR)
    expect("RMDIR of a non-empty directory", rpc.rmdir(root, b"errors-" + RUN), NOTEMPTY)
    expect("RMDIR of a file", rpc.rmdir(directory, b"file"), NOTDIR)
    expect("REMOVE of a directory", rpc.remove(root, b"errors-" + RUN), ISDIR)
    expect("MKNOD of a device", rpc.mknod(directory, b"dev", 4), NOTSUPP)
    expect("MKNOD of a FIFO", rpc.mknod(directory, b"fifo", 7), OK)
    expect("MKNOD of a regular file", rpc.mknod(directory, b"regular", 1), BADTYPE)
    # Exclusive create: a retry with the same verifier succeeds, another verifier does not.
    status, first = rpc.create(directory, b"exclusive", how=2, verifier=b"verifier")
    expect("CREATE EXCLUSIVE", status, OK)
    status, again = rpc.create(directory, b"exclusive", how=2, verifier=b"verifier")
    expect("CREATE EXCLUSIVE retried", (status, again), (OK, first))
    expect("CREATE EXCLUSIVE, another verifier", rpc.create(directory, b"exclusive", how=2, verifier=b"another!")[0],
           EXIST)
    # Forged and stale handles.
    forged = bytearray(file)
    forged[15] ^= 1
    expect("GETATTR of a forged handle", rpc.getattr(bytes(forged))[0], BADHANDLE)
    expect("GETATTR of a short handle", rpc.getattr(b"\x01\0\0\0")[0], BADHANDLE)
    status, doomed = rpc.create(directory, b"doomed")
    rpc.remove(directory, b"doomed")
    expect("GETATTR of a removed file's handle", rpc.getattr(doomed)[0], STALE)
    # SETATTR guard: a stale ctime is NOT_SYNC, the current one applies.
    status, attributes = rpc.getattr(file)
    expect("SETATTR with a stale guard", rpc.setattr(file, guard=(1, 2), mode=0o600), NOT_SYNC)
    expect("SETATTR with the current guard", rpc.setattr(file, guard=attributes["ctime"], mode=0o600), OK)
    expect("GETATTR after SETATTR", rpc.getattr(file)[1]["mode"], 0o600)
    expect("SETATTR size of a directory", rpc.setattr(directory, size=0), ISDIR)
    # Symlinks, links, renames.
    expect("SYMLINK", rpc.symlink(directory, b"link", b"file"), OK)
    status, link = rpc.lookup(directory, b"link")
    expect("READLINK", rpc.readlink(link), (OK, b"file"))
    expect("LINK", rpc.link(file, directory, b"hard"), OK)
    expect("link count", rpc.getattr(file)[1]["nlink"], 2)
    expect("RENAME", rpc.rename(directory, b"hard", root, b"moved-" + RUN), OK)
    expect("RENAME of a missing name", rpc.rename(directory, b"nothing", root, b"x"), NOENT)
    status, other_root = rpc.mount("/default/squashed")
    expect("RENAME across exports", rpc.rename(directory, b"file", other_root, b"file"), XDEV)
    expect("LINK across exports", rpc.link(file, other_root, b"file"), XDEV)
    for procedure in (FSSTAT, FSINFO, PATHCONF):
        expect(f"procedure {procedure} on the root", rpc.simple(procedure, root)[0], OK)
    return rpc, root, directory


def writes_and_reads(rpc, root):
    status, file = rpc.create(root, b"written-" + RUN)
    data = os.urandom(3 << 20)
    verifiers = set()
    for offset in range(0, len(data), 1 << 20):
        status, committed, verifier = rpc.write(file, offset, data[offset:offset + (1 << 20)], UNSTABLE)
        expect(f"WRITE UNSTABLE at {offset}", (status, committed), (OK, UNSTABLE))
        verifiers.add(verifier)
    expect("size before COMMIT", rpc.getattr(file)[1]["size"], len(data))
    status, read, eof = rpc.read(file, (1 << 20) - 5, 10)
    expect("READ of buffered bytes", read, data[(1 << 20) - 5:(1 << 20) + 5])
    status, verifier = rpc.commit(file)
    expect("COMMIT answers the write verifier", (status, {verifier} == verifiers), (OK, True))
    back = b""
    while len(back) < len(data):
        status, read, eof = rpc.read(file, len(back), 1 << 20)
        back += read
    expect("READ back after COMMIT", back == data and eof, True)
    status, committed, _ = rpc.write(file, 10, b"stable", FILE_SYNC)
    expect("WRITE FILE_SYNC", (status, committed), (OK, FILE_SYNC))
    expect("sparse READ beyond a hole", rpc.write(file, (8 << 20), b"end", FILE_SYNC)[0], OK)
    status, read, eof = rpc.read(file, (5 << 20), 16)
    expect("a hole reads as zeros", (read, eof), (b"\0" * 16, False))
    small_files(rpc, root)
    flushes_under_way(rpc, root)
    # READDIRPLUS pages and cookies.
    status, many = rpc.mkdir(root, b"many-" + RUN)
    for index in range(300):
        rpc.create(many, f"entry-{index:04}".encode())
    names = list_all(rpc, many)
    expect("READDIRPLUS pages hold every entry once", sorted(names),
           sorted([b".", b".."] + [f"entry-{index:04}".encode() for index in range(300)]))
    status, entries, verifier, eof = rpc.readdirplus(many, 0, maxcount=2048)
    expect("READDIRPLUS with a wrong cookie verifier", rpc.readdirplus(many, entries[-1][1], b"wrongver")[0],
           BAD_COOKIE)
    status, plain, _, _ = rpc.readdir(many, 0)
    expect("READDIR", (status, plain[0][0]), (OK, b"."))
    status, granted = rpc.access(file)
    expect("ACCESS of the owner (root, ids as sent)", (status, granted & 0x0D), (OK, 0x0D))


def small_files(rpc, root):
    """A file within the inline bound (4 KiB) lives in its inode: it is written, merged,
    grown past the bound into chunks, cut and written again, and every read matches a
    flat model of its bytes."""
    status, file = rpc.create(root, b"small-" + RUN)
    model = bytearray()

    def write(offset, data, stable):
        if len(model) < offset + len(data):
            model.extend(b"\0" * (offset + len(data) - len(model)))
        model[offset:offset + len(data)] = data
        status, committed, _ = rpc.write(file, offset, data, stable)
        if stable == UNSTABLE:
            expect(f"COMMIT after {len(data)} bytes at {offset}", rpc.commit(file)[0], OK)
        return status

    def read_all(what):
        back = b""
        while True:
            status, read, eof = rpc.read(file, len(back), 1 << 20)
            back += read
            if eof or not read:
                break
        expect(f"{what}: {len(model)} bytes read back", bytes(back) == bytes(model), True)

    expect("a 100-byte WRITE", write(0, os.urandom(100), UNSTABLE), OK)
    read_all("inline file")
    expect("a WRITE merged into it", write(50, os.urandom(3000), FILE_SYNC), OK)
    read_all("merged inline file")
    expect("a WRITE past the inline bound", write(4000, os.urandom(6000), UNSTABLE), OK)
    read_all("inline bytes, a hole and chunks")
    expect("a WRITE over the inline bytes and the chunks", write(3000, os.urandom(2000), FILE_SYNC), OK)
    read_all("overwritten across the bound")
    expect("SETATTR size 20", rpc.setattr(file, size=20), OK)
    del model[20:]
    read_all("cut to 20 bytes")
    expect("a WRITE after the cut", write(30, os.urandom(10), UNSTABLE), OK)
    read_all("written again after the cut")
    expect("SETATTR size 5000", rpc.setattr(file, size=5000), OK)
    model.extend(b"\0" * (5000 - len(model)))
    read_all("extended with a hole")


def flushes_under_way(rpc, root):
    """24 MiB of unstable writes: past 8 MiB a file's buffer flushes in the background
    while writes go on. Overwrites of bytes being flushed, reads and GETATTRs in between
    all see the newest bytes; after COMMIT every byte reads back."""
    status, file = rpc.create(root, b"flushed-" + RUN)
    model = bytearray(os.urandom(24 << 20))
    rng = random.Random(RUN)
    written = 0
    for offset in range(0, len(model), 1 << 20):
        status, _, _ = rpc.write(file, offset, bytes(model[offset:offset + (1 << 20)]), UNSTABLE)
        assert status == OK, f"WRITE at {offset}: {status}"
        written = offset + (1 << 20)
        if offset % (3 << 20) == 0:
            at = rng.randrange(0, written - (64 << 10))
            model[at:at + (64 << 10)] = os.urandom(64 << 10)
            status, _, _ = rpc.write(file, at, bytes(model[at:at + (64 << 10)]), UNSTABLE)
            assert status == OK, f"overwrite at {at}: {status}"
            at = rng.randrange(0, written - (256 << 10))
            status, read, _ = rpc.read(file, at, 256 << 10)
            assert read == bytes(model[at:at + (256 << 10)]), f"READ at {at} of {written} written"
            assert rpc.getattr(file)[1]["size"] == written
    print("ok  reads and GETATTRs during background flushes see the newest bytes")
    expect("COMMIT after background flushes", rpc.commit(file)[0], OK)
    back = bytearray()
    while len(back) < len(model):
        status, read, eof = rpc.read(file, len(back), 1 << 20)
        back += read
    expect("24 MiB read back after COMMIT", bytes(back) == bytes(model), True)
    expect("REMOVE of the flushed file", rpc.remove(root, b"flushed-" + RUN), OK)


def exports_options(port, unsquashed_port):
    """`unsquashed_port` is a gateway exporting every namespace with ids as sent: the
    operator, as root there, opens the squashed exports' roots to everyone first (file
    handles are the cluster's: one from that gateway works here too)."""
    rpc = Rpc(port)
    operator = Rpc(unsquashed_port)
    status, ro = rpc.mount("/default/ro")
    expect("MNT of a read-only export", status, OK)
    expect("CREATE on a read-only export", rpc.create(ro, b"x")[0], ROFS)
    expect("MKDIR on a read-only export", rpc.mkdir(ro, b"x")[0], ROFS)
    status, granted = rpc.access(ro)
    expect("ACCESS on a read-only export grants no MODIFY", granted & 0x04, 0)
    # Root squashed: root is the anonymous user there.
    status, squashed = rpc.mount("/default/squashed")
    expect("root squashed cannot create in root's 0755 directory", rpc.create(squashed, b"as-root")[0], ACCES)
    expect("root squashed cannot chmod root's directory", rpc.setattr(squashed, mode=0o777), 1)
    status, same = operator.mount("/default/squashed")
    expect("another gateway hands out the same handle", same, squashed)
    expect("the operator opens the directory", operator.setattr(same, mode=0o777), OK)
    status, made = rpc.create(squashed, b"as-root")
    expect("root squashed creates in a 0777 directory", status, OK)
    expect("its owner is the anonymous uid", rpc.getattr(made)[1]["uid"], 65534)
    # All squashed: everyone is 4242:4343.
    status, everyone = rpc.mount("/default/everyone")
    operator.setattr(operator.mount("/default/everyone")[1], mode=0o777)
    rpc.set_user(1000, 1000)
    status, made = rpc.create(everyone, b"as-user")
    expect("all squashed creates as the anonymous ids", (status, rpc.getattr(made)[1]["uid"]), (OK, 4242))
    rpc.set_user(0, 0)
    # Mode bits: a 0700 directory of root is closed to uid 1000 (ids as sent).
    status, root = rpc.mount("/default/default")
    status, private = rpc.mkdir(root, b"private-" + RUN, mode=0o700)
    rpc.set_user(1000, 1000)
    expect("LOOKUP in another user's 0700 directory", rpc.lookup(private, b"x")[0], ACCES)
    expect("CREATE in another user's 0700 directory", rpc.create(private, b"x")[0], ACCES)
    status, granted = rpc.access(private)
    expect("ACCESS grants nothing there", (status, granted), (OK, 0))
    rpc.set_user(0, 0)
    # Allowed clients: /default/narrow takes 127.0.0.1 only.
    narrow_client = Rpc(port, source="127.0.0.2")
    expect("MNT from a client the export does not allow", narrow_client.mount("/default/narrow")[0], ACCES)
    status, narrow = rpc.mount("/default/narrow")
    expect("NFS call from a client the export does not allow", narrow_client.getattr(narrow)[0], ACCES)
    expect("the allowed client", rpc.getattr(narrow)[0], OK)
    # Quota: at most 5 inodes in /default/quota.
    status, quota = rpc.mount("/default/quota")
    statuses = [rpc.create(quota, f"q{index}".encode())[0] for index in range(7)]
    expect("CREATE past the files quota", statuses, [OK] * 5 + [DQUOT] * 2)


def libnfs_checks(port):
    nfs = Libnfs(url(port, "/default/default"))
    data = os.urandom((1 << 20) + 12345)
    top = "/libnfs-" + RUN.decode()
    expect("libnfs mkdir", nfs.call("nfs_mkdir", top), 0)
    expect("libnfs creat, pwrite, fsync", nfs.write_file(top + "/file.bin", data), 0)
    expect("libnfs stat size", nfs.stat(top + "/file.bin").size, len(data))
    expect("libnfs pread", nfs.read_file(top + "/file.bin", len(data)) == data, True)
    expect("libnfs symlink", nfs.call("nfs_symlink", "file.bin", top + "/link"), 0)
    expect("libnfs link", nfs.call("nfs_link", top + "/file.bin", top + "/hard"), 0)
    expect("libnfs rename", nfs.call("nfs_rename", top + "/hard", top + "/hard2"), 0)
    expect("libnfs chmod", nfs.call("nfs_chmod", top + "/file.bin", 0o640), 0)
    expect("libnfs chown", nfs.call("nfs_chown", top + "/file.bin", 1000, 1000), 0)
    expect("libnfs truncate", nfs.call("nfs_truncate", top + "/file.bin", 10), 0)
    stat = nfs.stat(top + "/file.bin")
    expect("libnfs stat after", (stat.size, stat.mode & 0o777, stat.uid), (10, 0o640, 1000))
    expect("libnfs stat of a missing file", nfs.stat(top + "/missing"), -2)
    expect("libnfs mkdir of an existing directory", nfs.call("nfs_mkdir", top), -17)
    expect("libnfs rmdir of a non-empty directory", nfs.call("nfs_rmdir", top), -39)
    for path in (top + "/link", top + "/hard2", top + "/file.bin"):
        expect(f"libnfs unlink {path}", nfs.call("nfs_unlink", path), 0)
    expect("libnfs rmdir", nfs.call("nfs_rmdir", top), 0)


def checks(port, unsquashed_port):
    rpc_level(port)
    rpc, root, directory = handles_and_errors(port)
    writes_and_reads(rpc, root)
    exports_options(port, unsquashed_port)
    libnfs_checks(port)
    print("all nfs checks passed")


def before_restart(port, state_path):
    rpc = Rpc(port)
    status, root = rpc.mount("/default/default")
    status, directory = rpc.mkdir(root, b"restart-" + RUN)
    status, file = rpc.create(directory, b"kept")
    status, _, verifier = rpc.write(file, 0, b"committed bytes", UNSTABLE)
    rpc.commit(file)
    status, lost = rpc.create(directory, b"lost")
    status, _, _ = rpc.write(lost, 0, b"never committed", UNSTABLE)
    status, entries, cookie_verifier, eof = rpc.readdirplus(directory, 0)
    state = {"directory": directory.hex(), "kept": file.hex(), "lost": lost.hex(), "verifier": verifier.hex(),
             "cookie_verifier": cookie_verifier.hex(), "cookie": entries[-1][1]}
    with open(state_path, "w") as out:
        json.dump(state, out)
    print("saved state before the restart")


def after_restart(port, state_path):
    with open(state_path) as source:
        state = json.load(source)
    rpc = Rpc(port)
    directory, kept, lost = (bytes.fromhex(state[name]) for name in ("directory", "kept", "lost"))
    expect("a handle from before the restart", rpc.getattr(kept)[0], OK)
    expect("its committed bytes", rpc.read(kept, 0, 100)[1], b"committed bytes")
    expect("an uncommitted write is gone", rpc.getattr(lost)[1]["size"], 0)
    status, verifier = rpc.commit(lost)
    expect("the write verifier changed", (status, verifier.hex() != state["verifier"]), (OK, True))
    status, entries, cookie_verifier, eof = rpc.readdirplus(directory, state["cookie"],
                                                            bytes.fromhex(state["cookie_verifier"]))
    expect("a cookie and verifier from before the restart", (status, eof), (OK, True))
    print("all restart checks passed")


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "checks":
        checks(port, int(sys.argv[3]))
    elif mode == "before-restart":
        before_restart(port, sys.argv[3])
    elif mode == "after-restart":
        after_restart(port, sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}")
