"""Two NFSv3 clients for the NFS gateway's tests and benchmark.

- `Libnfs`: libnfs (libnfs.so.13, the library nfs-ls, nfs-cp and nfs-cat are built on)
  through ctypes, reaching the gateway without a portmapper (`nfsport`, `mountport`).
  Calls return 0 or a byte count, or -errno as libnfs maps the NFS status.
- `Rpc`: a raw ONC RPC client over TCP speaking NFSv3 and MOUNT v3 itself, for what
  libnfs never sends: exact NFS3ERR codes, forged handles, cookie verifiers, bad
  credentials, unknown programs and procedures, malformed records.
"""

import ctypes
import socket
import struct
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_uint64, c_void_p, create_string_buffer

NFS_PROGRAM, MOUNT_PROGRAM = 100003, 100005

# nfsstat3
OK, PERM, NOENT, IO, ACCES, EXIST, XDEV, NOTDIR, ISDIR, INVAL, FBIG, NOSPC, ROFS = 0, 1, 2, 5, 13, 17, 18, 20, 21, 22, 27, 28, 30
NAMETOOLONG, NOTEMPTY, DQUOT, STALE, BADHANDLE, NOT_SYNC, BAD_COOKIE, NOTSUPP, BADTYPE = 63, 66, 69, 70, 10001, 10002, 10003, 10004, 10007

GETATTR, SETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE, MKDIR, SYMLINK, MKNOD = range(1, 12)
REMOVE, RMDIR, RENAME, LINK, READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF, COMMIT = range(12, 22)

UNSTABLE, DATA_SYNC, FILE_SYNC = 0, 1, 2


class Packer:
    def __init__(self):
        self.parts = []

    def u32(self, value):
        self.parts.append(struct.pack(">I", value & 0xFFFFFFFF))
        return self

    def u64(self, value):
        self.parts.append(struct.pack(">Q", value))
        return self

    def fixed(self, data):
        self.parts.append(data + b"\0" * ((4 - len(data) % 4) % 4))
        return self

    def opaque(self, data):
        return self.u32(len(data)).fixed(data)

    def bytes(self):
        return b"".join(self.parts)


class Unpacker:
    def __init__(self, data):
        self.data, self.at = data, 0

    def u32(self):
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return value

    def u64(self):
        (value,) = struct.unpack_from(">Q", self.data, self.at)
        self.at += 8
        return value

    def fixed(self, length):
        value = self.data[self.at:self.at + length]
        self.at += length + (4 - length % 4) % 4
        return value

    def opaque(self):
        return self.fixed(self.u32())

    def fattr(self):
        names = ["type", "mode", "nlink", "uid", "gid"]
        attributes = {name: self.u32() for name in names}
        attributes["size"], attributes["used"] = self.u64(), self.u64()
        attributes["rdev"] = (self.u32(), self.u32())
        attributes["fsid"], attributes["fileid"] = self.u64(), self.u64()
        for name in ("atime", "mtime", "ctime"):
            attributes[name] = (self.u32(), self.u32())
        return attributes

    def post_op(self):
        return self.fattr() if self.u32() else None

    def wcc(self):
        if self.u32():
            self.u64()
            self.u32(), self.u32(), self.u32(), self.u32()
        return self.post_op()


def sattr(mode=None, uid=None, gid=None, size=None, mtime=None):
    packer = Packer()
    for value in (mode, uid, gid):
        if value is None:
            packer.u32(0)
        else:
            packer.u32(1).u32(value)
    if size is None:
        packer.u32(0)
    else:
        packer.u32(1).u64(size)
    packer.u32(0)  # atime: don't change
    if mtime is None:
        packer.u32(0)
    else:
        packer.u32(2).u32(mtime[0]).u32(mtime[1])
    return packer.bytes()


class RpcError(Exception):
    """A reply that is not an accepted SUCCESS: (kind, status)."""

    def __init__(self, kind, status):
        super().__init__(f"{kind} {status}")
        self.kind, self.status = kind, status


class Rpc:
    """A raw RPC connection; credentials default to AUTH_SYS uid/gid 0."""

    def __init__(self, port, host="127.0.0.1", source=None, uid=0, gid=0, gids=()):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(30)
        self.sock.connect((host, port))
        self.xid = 1000
        self.set_user(uid, gid, gids)

    def set_user(self, uid, gid, gids=()):
        body = Packer().u32(0).opaque(b"kiseki-test").u32(uid).u32(gid).u32(len(gids))
        for group in gids:
            body.u32(group)
        self.credential = (1, body.bytes())

    def close(self):
        self.sock.close()

    def send_record(self, payload):
        self.sock.sendall(struct.pack(">I", 0x80000000 | len(payload)) + payload)

    def recv_exact(self, length):
        data = b""
        while len(data) < length:
            chunk = self.sock.recv(length - len(data))
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
        return data

    def recv_record(self):
        data = b""
        while True:
            (mark,) = struct.unpack(">I", self.recv_exact(4))
            data += self.recv_exact(mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                return data

    def call(self, program, procedure, arguments=b"", version=3, credential=None, rpc_version=2):
        self.xid += 1
        flavor, body = credential or self.credential
        header = Packer().u32(self.xid).u32(0).u32(rpc_version).u32(program).u32(version).u32(procedure)
        header.u32(flavor).opaque(body).u32(0).opaque(b"")
        self.send_record(header.bytes() + arguments)
        reply = Unpacker(self.recv_record())
        assert reply.u32() == self.xid, "the reply repeats the xid"
        assert reply.u32() == 1, "a reply"
        if reply.u32() == 1:  # MSG_DENIED
            kind = reply.u32()
            raise RpcError("rpc_mismatch" if kind == 0 else "auth_error", reply.u32())
        reply.u32(), reply.opaque()  # verifier
        accept = reply.u32()
        if accept != 0:
            raise RpcError("accept", accept)
        return reply

    # MOUNT
    def mount(self, path):
        reply = self.call(MOUNT_PROGRAM, 1, Packer().opaque(path.encode()).bytes())
        status = reply.u32()
        if status != 0:
            return status, None
        handle = reply.opaque()
        flavors = [reply.u32() for _ in range(reply.u32())]
        assert 1 in flavors, "AUTH_SYS offered"
        return 0, handle

    def exports(self):
        reply = self.call(MOUNT_PROGRAM, 5)
        paths = []
        while reply.u32():
            paths.append(reply.opaque().decode())
            while reply.u32():
                reply.opaque()
        return paths

    # NFS
    def nfs(self, procedure, arguments):
        reply = self.call(NFS_PROGRAM, procedure, arguments)
        return reply.u32(), reply

    def getattr(self, handle):
        status, reply = self.nfs(GETATTR, Packer().opaque(handle).bytes())
        return status, (reply.fattr() if status == OK else None)

    def lookup(self, directory, name):
        status, reply = self.nfs(LOOKUP, Packer().opaque(directory).opaque(name).bytes())
        if status != OK:
            return status, None
        return status, reply.opaque()

    def create(self, directory, name, mode=0o644, how=0, verifier=b"\0" * 8):
        arguments = Packer().opaque(directory).opaque(name).u32(how)
        arguments = arguments.fixed(verifier) if how == 2 else arguments.fixed(sattr(mode=mode))
        status, reply = self.nfs(CREATE, arguments.bytes())
        if status != OK:
            return status, None
        assert reply.u32() == 1, "CREATE returns the handle"
        return status, reply.opaque()

    def mkdir(self, directory, name, mode=0o755):
        status, reply = self.nfs(MKDIR, Packer().opaque(directory).opaque(name).fixed(sattr(mode=mode)).bytes())
        if status != OK:
            return status, None
        assert reply.u32() == 1
        return status, reply.opaque()

    def symlink(self, directory, name, target):
        arguments = Packer().opaque(directory).opaque(name).fixed(sattr()).opaque(target)
        status, reply = self.nfs(SYMLINK, arguments.bytes())
        return status

    def mknod(self, directory, name, ftype):
        arguments = Packer().opaque(directory).opaque(name).u32(ftype)
        if ftype in (3, 4):
            arguments.fixed(sattr()).u32(1).u32(2)
        elif ftype in (6, 7):
            arguments.fixed(sattr(mode=0o644))
        status, _ = self.nfs(MKNOD, arguments.bytes())
        return status

    def remove(self, directory, name):
        return self.nfs(REMOVE, Packer().opaque(directory).opaque(name).bytes())[0]

    def rmdir(self, directory, name):
        return self.nfs(RMDIR, Packer().opaque(directory).opaque(name).bytes())[0]

    def rename(self, from_dir, from_name, to_dir, to_name):
        arguments = Packer().opaque(from_dir).opaque(from_name).opaque(to_dir).opaque(to_name)
        return self.nfs(RENAME, arguments.bytes())[0]

    def link(self, handle, directory, name):
        return self.nfs(LINK, Packer().opaque(handle).opaque(directory).opaque(name).bytes())[0]

    def write(self, handle, offset, data, stable=UNSTABLE):
        arguments = Packer().opaque(handle).u64(offset).u32(len(data)).u32(stable).opaque(data)
        status, reply = self.nfs(WRITE, arguments.bytes())
        reply.wcc()
        if status != OK:
            return status, None, None
        count, committed, verifier = reply.u32(), reply.u32(), reply.fixed(8)
        assert count == len(data)
        return status, committed, verifier

    def commit(self, handle):
        status, reply = self.nfs(COMMIT, Packer().opaque(handle).u64(0).u32(0).bytes())
        reply.wcc()
        return status, (reply.fixed(8) if status == OK else None)

    def read(self, handle, offset, count):
        status, reply = self.nfs(READ, Packer().opaque(handle).u64(offset).u32(count).bytes())
        reply.post_op()
        if status != OK:
            return status, None, None
        reply.u32()
        eof = reply.u32()
        return status, reply.opaque(), bool(eof)

    def setattr(self, handle, guard=None, **changes):
        arguments = Packer().opaque(handle).fixed(sattr(**changes))
        if guard is None:
            arguments.u32(0)
        else:
            arguments.u32(1).u32(guard[0]).u32(guard[1])
        status, _ = self.nfs(SETATTR, arguments.bytes())
        return status

    def access(self, handle, mask=0x3F):
        status, reply = self.nfs(ACCESS, Packer().opaque(handle).u32(mask).bytes())
        reply.post_op()
        return status, (reply.u32() if status == OK else None)

    def readlink(self, handle):
        status, reply = self.nfs(READLINK, Packer().opaque(handle).bytes())
        reply.post_op()
        return status, (reply.opaque() if status == OK else None)

    def readdirplus(self, directory, cookie=0, verifier=b"\0" * 8, maxcount=32768):
        arguments = Packer().opaque(directory).u64(cookie).fixed(verifier).u32(maxcount).u32(maxcount)
        status, reply = self.nfs(READDIRPLUS, arguments.bytes())
        reply.post_op()
        if status != OK:
            return status, None, None, None
        verifier = reply.fixed(8)
        entries = []
        while reply.u32():
            fileid, name, cookie = reply.u64(), reply.opaque(), reply.u64()
            attributes = reply.post_op()
            handle = reply.opaque() if reply.u32() else None
            entries.append((name, cookie, fileid, attributes, handle))
        return status, entries, verifier, bool(reply.u32())

    def readdir(self, directory, cookie=0, verifier=b"\0" * 8, count=8192):
        arguments = Packer().opaque(directory).u64(cookie).fixed(verifier).u32(count)
        status, reply = self.nfs(READDIR, arguments.bytes())
        reply.post_op()
        if status != OK:
            return status, None, None, None
        verifier = reply.fixed(8)
        entries = []
        while reply.u32():
            fileid, name, cookie = reply.u64(), reply.opaque(), reply.u64()
            entries.append((name, cookie, fileid))
        return status, entries, verifier, bool(reply.u32())

    def simple(self, procedure, handle):
        status, reply = self.nfs(procedure, Packer().opaque(handle).bytes())
        reply.post_op()
        return status, reply


def list_all(rpc, directory):
    """Every entry name of a directory through READDIRPLUS pages."""
    names, cookie, verifier = [], 0, b"\0" * 8
    while True:
        status, entries, verifier, eof = rpc.readdirplus(directory, cookie, verifier, maxcount=4096)
        assert status == OK, status
        names += [entry[0] for entry in entries]
        if eof:
            return names
        cookie = entries[-1][1]


class nfs_url(Structure):
    _fields_ = [("server", c_char_p), ("path", c_char_p), ("file", c_char_p)]


class nfs_stat_64(Structure):
    _fields_ = [(name, c_uint64) for name in (
        "dev ino mode nlink uid gid rdev size blksize blocks atime mtime ctime atime_nsec mtime_nsec ctime_nsec used"
    ).split()]


class Libnfs:
    """libnfs's synchronous API on one mounted export."""

    def __init__(self, url):
        lib = ctypes.CDLL("libnfs.so.13")
        self.lib = lib
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
        for name in ("nfs_rename", "nfs_link", "nfs_symlink"):
            getattr(lib, name).argtypes = [c_void_p, c_char_p, c_char_p]
        lib.nfs_readlink.argtypes = [c_void_p, c_char_p, c_char_p, c_int]
        lib.nfs_chmod.argtypes = [c_void_p, c_char_p, c_int]
        lib.nfs_chown.argtypes = [c_void_p, c_char_p, c_int, c_int]
        lib.nfs_truncate.argtypes = [c_void_p, c_char_p, c_uint64]
        self.context = lib.nfs_init_context()
        parsed = lib.nfs_parse_url_dir(self.context, url.encode())
        assert parsed, lib.nfs_get_error(self.context)
        status = lib.nfs_mount(self.context, parsed.contents.server, parsed.contents.path)
        assert status == 0, lib.nfs_get_error(self.context)

    def error(self):
        return self.lib.nfs_get_error(self.context).decode()

    def write_file(self, path, data, mode=0o644):
        handle = c_void_p()
        status = self.lib.nfs_creat(self.context, path.encode(), mode, byref(handle))
        if status < 0:
            return status
        written = 0
        while written < len(data):
            piece = data[written:written + (1 << 20)]
            status = self.lib.nfs_pwrite(self.context, handle, written, len(piece), piece)
            if status < 0:
                self.lib.nfs_close(self.context, handle)
                return status
            written += status
        status = self.lib.nfs_fsync(self.context, handle)
        self.lib.nfs_close(self.context, handle)
        return status

    def read_file(self, path, size):
        handle = c_void_p()
        status = self.lib.nfs_open(self.context, path.encode(), 0, byref(handle))
        if status < 0:
            return status
        buffer = create_string_buffer(max(size, 1))
        data = b""
        while len(data) < size:
            count = self.lib.nfs_pread(self.context, handle, len(data), min(1 << 20, size - len(data)), buffer)
            if count <= 0:
                break
            data += buffer.raw[:count]
        self.lib.nfs_close(self.context, handle)
        return data

    def stat(self, path):
        result = nfs_stat_64()
        status = self.lib.nfs_stat64(self.context, path.encode(), byref(result))
        return status if status < 0 else result

    def call(self, name, *arguments):
        encoded = [argument.encode() if isinstance(argument, str) else argument for argument in arguments]
        return getattr(self.lib, name)(self.context, *encoded)
