"""Every FUSE operation of a Kiseki mount through Python's os and shutil, with the errno
each error case must give. Run by client/cli/tests/fuse.rs as `python3 fuse_ops.py MOUNT`;
prints one line per check and exits non-zero on the first failure."""

import ctypes
import errno
import mmap
import os
import shutil
import stat
import sys
import time

ROOT = sys.argv[1]
LIBC = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def path(*names):
    return os.path.join(ROOT, "ops", *names)


def check(name, condition):
    if not condition:
        print(f"FAIL {name}")
        sys.exit(1)
    print(f"ok   {name}")


def fails_with(name, code, function, *arguments):
    try:
        function(*arguments)
    except OSError as error:
        check(f"{name} -> {errno.errorcode.get(error.errno, error.errno)}", error.errno == code)
        return
    check(f"{name} -> expected {errno.errorcode[code]}, it succeeded", False)


def renameat2(old, new, flags):
    result = LIBC.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def write_file(name, data, mode="wb"):
    with open(name, mode) as handle:
        handle.write(data)


def read_file(name):
    with open(name, "rb") as handle:
        return handle.read()


def files_and_directories():
    os.mkdir(path())
    fails_with("mkdir existing", errno.EEXIST, os.mkdir, path())
    os.mkdir(path("d"), 0o750)
    check("mkdir mode", stat.S_IMODE(os.stat(path("d")).st_mode) == 0o750)
    check("directory is a directory", stat.S_ISDIR(os.stat(path("d")).st_mode))
    fd = os.open(path("x"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.close(fd)
    check("create mode", stat.S_IMODE(os.stat(path("x")).st_mode) == 0o640)
    fails_with("O_CREAT|O_EXCL on existing", errno.EEXIST, os.open, path("x"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fails_with("open missing", errno.ENOENT, os.open, path("missing"), os.O_RDONLY)
    fails_with("lookup through a file", errno.ENOTDIR, os.stat, path("x", "y"))
    fails_with("mkdir in missing", errno.ENOENT, os.mkdir, path("missing", "d"))
    fails_with("name too long", errno.ENAMETOOLONG, os.open, path("n" * 256), os.O_CREAT | os.O_WRONLY)
    write_file(path("d", "inner"), b"inner")
    fails_with("rmdir non-empty", errno.ENOTEMPTY, os.rmdir, path("d"))
    fails_with("rmdir a file", errno.ENOTDIR, os.rmdir, path("x"))
    fails_with("unlink a directory", errno.EISDIR, os.unlink, path("d"))
    fails_with("unlink missing", errno.ENOENT, os.unlink, path("missing"))
    names = sorted(os.listdir(path()))
    check("readdir lists the entries", names == ["d", "x"])
    with os.scandir(path()) as entries:
        kinds = {entry.name: entry.is_dir() for entry in entries}
    check("readdirplus kinds", kinds == {"d": True, "x": False})
    os.mkfifo(path("fifo"), 0o600)
    check("mkfifo", stat.S_ISFIFO(os.lstat(path("fifo")).st_mode))
    os.mknod(path("null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    info = os.lstat(path("null"))
    check("mknod char device", stat.S_ISCHR(info.st_mode) and os.major(info.st_rdev) == 1 and os.minor(info.st_rdev) == 3)
    fails_with("mkfifo over existing", errno.EEXIST, os.mkfifo, path("fifo"))
    os.unlink(path("fifo"))
    os.unlink(path("null"))
    os.unlink(path("d", "inner"))
    os.rmdir(path("d"))
    check("rmdir removed", not os.path.exists(path("d")))
    for index in range(1200):
        write_file(path(f"many-{index:04}"), b"")
    check("readdir of 1200 entries pages", len([n for n in os.listdir(path()) if n.startswith("many-")]) == 1200)
    for index in range(1200):
        os.unlink(path(f"many-{index:04}"))


def data():
    write_file(path("data"), b"0123456789")
    check("read back", read_file(path("data")) == b"0123456789")
    fd = os.open(path("data"), os.O_RDWR)
    os.pwrite(fd, b"abc", 4)
    check("pwrite in the middle", os.pread(fd, 10, 0) == b"0123abc789")
    os.pwrite(fd, b"Z", 20)
    check("write past the end leaves a hole of zeros", os.pread(fd, 30, 0) == b"0123abc789" + b"\0" * 10 + b"Z")
    check("fstat sees the buffered size", os.fstat(fd).st_size == 21)
    os.fsync(fd)
    os.fdatasync(fd)
    os.ftruncate(fd, 5)
    check("ftruncate shrinks", os.pread(fd, 30, 0) == b"0123a")
    os.ftruncate(fd, 8)
    check("ftruncate extends with zeros", os.pread(fd, 30, 0) == b"0123a\0\0\0")
    os.close(fd)
    os.truncate(path("data"), 2)
    check("truncate by path", read_file(path("data")) == b"01")
    write_file(path("data"), b"xyz", "ab")
    fd = os.open(path("data"), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"!")
    os.close(fd)
    check("O_APPEND appends", read_file(path("data")) == b"01xyz!")
    fd = os.open(path("data"), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    check("O_TRUNC empties", os.stat(path("data")).st_size == 0)
    with open(path("sparse"), "wb") as handle:
        handle.seek(5 << 20)
        handle.write(b"end")
    sparse = read_file(path("sparse"))
    check("sparse file reads zeros", len(sparse) == (5 << 20) + 3 and sparse[: 5 << 20] == bytes(5 << 20))
    big = os.urandom(3 << 20)
    write_file(path("big"), big)
    check("3 MiB file reads back", read_file(path("big")) == big)
    with open(path("big"), "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
        check("read-only mmap", mapped[1000:2000] == big[1000:2000])
        mapped.close()
    # A FUSE daemon cannot refuse mmap (the kernel decides); writes to a shared mapping
    # reach the mount as ordinary write-back, and msync commits them.
    fd = os.open(path("big"), os.O_RDWR)
    mapped = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    mapped[4096:4101] = b"MMAP!"
    mapped.flush()
    mapped.close()
    os.close(fd)
    big = big[:4096] + b"MMAP!" + big[4101:]
    check("writable shared mmap writes through", read_file(path("big")) == big)
    shutil.copyfile(path("big"), path("big-copy"))
    check("shutil.copyfile", read_file(path("big-copy")) == big)
    fd = os.open(path("big"), os.O_RDONLY)
    fails_with("write on a read-only descriptor", errno.EBADF, os.write, fd, b"x")
    os.close(fd)
    fd = os.open(path("data"), os.O_RDWR)
    fails_with("fallocate punch hole unsupported", errno.EOPNOTSUPP, LIBC_fallocate_punch, fd)
    os.close(fd)
    # An open file outlives its last unlink: readable, writable and fstat-able through
    # its descriptor, gone from every listing, and freed at its last close.
    write_file(path("doomed"), b"still here")
    fd = os.open(path("doomed"), os.O_RDWR)
    os.unlink(path("doomed"))
    check("unlinked while open: gone by name", not os.path.exists(path("doomed")))
    check("unlinked while open: not listed", "doomed" not in os.listdir(path()))
    check("unlinked while open: the hidden directory is not listed", not any(n.startswith(".kiseki") for n in os.listdir(ROOT)))
    check("unlinked while open: readable", os.pread(fd, 100, 0) == b"still here")
    os.pwrite(fd, b"!", 10)
    os.fsync(fd)
    check("unlinked while open: writable", os.pread(fd, 100, 0) == b"still here!")
    check("unlinked while open: fstat", os.fstat(fd).st_size == 11 and os.fstat(fd).st_nlink == 0)
    os.close(fd)
    write_file(path("doomed"), b"new")
    check("the name can be reused", read_file(path("doomed")) == b"new")
    os.unlink(path("doomed"))


def LIBC_fallocate_punch(fd):
    result = LIBC.fallocate(fd, 0x02 | 0x01, ctypes.c_long(0), ctypes.c_long(1))
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def attributes():
    write_file(path("attr"), b"attr")
    os.chmod(path("attr"), 0o600)
    check("chmod", stat.S_IMODE(os.stat(path("attr")).st_mode) == 0o600)
    os.chown(path("attr"), 1234, 5678)
    info = os.stat(path("attr"))
    check("chown", (info.st_uid, info.st_gid) == (1234, 5678))
    os.utime(path("attr"), ns=(1_000_000_123, 2_000_000_456))
    info = os.stat(path("attr"))
    check("utimens", (info.st_atime_ns, info.st_mtime_ns) == (1_000_000_123, 2_000_000_456))
    before = os.stat(path("attr")).st_ctime_ns
    time.sleep(0.01)
    os.chmod(path("attr"), 0o644)
    check("ctime moves on a change", os.stat(path("attr")).st_ctime_ns > before)
    check("access R_OK", os.access(path("attr"), os.R_OK))
    vfs = os.statvfs(ROOT)
    check("statfs reports capacity", vfs.f_blocks > 0 and vfs.f_bavail <= vfs.f_blocks and vfs.f_namemax == 255)


def links():
    write_file(path("target"), b"target")
    os.symlink("target", path("link"))
    check("readlink", os.readlink(path("link")) == "target")
    check("symlink lstat", stat.S_ISLNK(os.lstat(path("link")).st_mode))
    check("follow symlink", read_file(path("link")) == b"target")
    fails_with("symlink over existing", errno.EEXIST, os.symlink, "x", path("link"))
    os.link(path("target"), path("hard"))
    check("hard link nlink", os.stat(path("target")).st_nlink == 2)
    check("hard link same inode", os.stat(path("target")).st_ino == os.stat(path("hard")).st_ino)
    os.unlink(path("target"))
    check("data stays with the other name", read_file(path("hard")) == b"target")
    check("nlink drops", os.stat(path("hard")).st_nlink == 1)
    os.mkdir(path("ldir"))
    fails_with("hard link to a directory", errno.EPERM, os.link, path("ldir"), path("ldir2"))
    fails_with("link over existing", errno.EEXIST, os.link, path("hard"), path("link"))


def renames():
    write_file(path("r1"), b"one")
    write_file(path("r2"), b"two")
    os.rename(path("r1"), path("r3"))
    check("rename", read_file(path("r3")) == b"one" and not os.path.exists(path("r1")))
    os.rename(path("r3"), path("r2"))
    check("rename replaces a file", read_file(path("r2")) == b"one")
    write_file(path("r4"), b"four")
    fails_with("RENAME_NOREPLACE on existing", errno.EEXIST, renameat2, path("r4"), path("r2"), RENAME_NOREPLACE)
    renameat2(path("r4"), path("r5"), RENAME_NOREPLACE)
    check("RENAME_NOREPLACE to a free name", read_file(path("r5")) == b"four")
    renameat2(path("r5"), path("r2"), RENAME_EXCHANGE)
    check("RENAME_EXCHANGE swaps", read_file(path("r2")) == b"four" and read_file(path("r5")) == b"one")
    os.mkdir(path("rd1"))
    os.mkdir(path("rd2"))
    write_file(path("rd2", "f"), b"f")
    fails_with("rename a directory over a non-empty one", errno.ENOTEMPTY, os.rename, path("rd1"), path("rd2"))
    fails_with("rename a file over a directory", errno.EISDIR, os.rename, path("r2"), path("rd1"))
    fails_with("rename a directory over a file", errno.ENOTDIR, os.rename, path("rd1"), path("r2"))
    fails_with("rename a directory into itself", errno.EINVAL, os.rename, path("rd2"), path("rd2", "sub"))
    fails_with("rename missing", errno.ENOENT, os.rename, path("nothing"), path("r9"))
    os.rename(path("rd2"), path("rd1", "moved"))
    check("rename a directory into another", read_file(path("rd1", "moved", "f")) == b"f")
    shutil.move(path("rd1"), path("rd3"))
    check("shutil.move", os.path.isdir(path("rd3", "moved")))
    shutil.rmtree(path("rd3"))
    check("shutil.rmtree", not os.path.exists(path("rd3")))


def xattrs():
    write_file(path("xa"), b"")
    os.setxattr(path("xa"), "user.color", b"blue")
    check("getxattr", os.getxattr(path("xa"), "user.color") == b"blue")
    check("listxattr", os.listxattr(path("xa")) == ["user.color"])
    fails_with("XATTR_CREATE on existing", errno.EEXIST, os.setxattr, path("xa"), "user.color", b"red", os.XATTR_CREATE)
    fails_with("XATTR_REPLACE on missing", errno.ENODATA, os.setxattr, path("xa"), "user.size", b"1", os.XATTR_REPLACE)
    os.setxattr(path("xa"), "user.color", b"red", os.XATTR_REPLACE)
    check("XATTR_REPLACE", os.getxattr(path("xa"), "user.color") == b"red")
    fails_with("getxattr missing", errno.ENODATA, os.getxattr, path("xa"), "user.none")
    os.removexattr(path("xa"), "user.color")
    check("removexattr", os.listxattr(path("xa")) == [])
    fails_with("removexattr missing", errno.ENODATA, os.removexattr, path("xa"), "user.color")


def cross_mount(other):
    if not other:
        return
    write_file(path("cross"), b"cross")
    fails_with("rename across namespaces", errno.EXDEV, os.rename, path("cross"), os.path.join(other, "cross"))
    fails_with("link across namespaces", errno.EXDEV, os.link, path("cross"), os.path.join(other, "cross"))


files_and_directories()
data()
attributes()
links()
renames()
xattrs()
cross_mount(sys.argv[2] if len(sys.argv) > 2 else None)
shutil.rmtree(path())
print("all operations passed")
