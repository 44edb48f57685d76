//! NFSv3 (RFC 1813) and MOUNT v3 on the wire: status codes, attributes, and the
//! arguments of every procedure, decoded with bounds ([`super::xdr`]). Results are
//! written by the procedures themselves with the helpers here.

use kiseki_namespace::{Attributes, FileKind, Timestamp};

use super::xdr::{XdrError, XdrReader, XdrWriter};

/// The NFS program.
pub const NFS_PROGRAM: u32 = 100_003;
/// The MOUNT program.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The one version of each served.
pub const VERSION_3: u32 = 3;
/// Longest file handle (NFSv3).
pub const HANDLE_BYTES_MAX: usize = 64;
/// Longest name of a directory entry.
pub const NAME_BYTES_MAX: usize = 255;
/// Longest path (symlink targets, MOUNT paths).
pub const PATH_BYTES_MAX: usize = 4095;
/// Largest READ or WRITE (and `rtmax`/`wtmax` in FSINFO).
pub const IO_BYTES_MAX: u32 = 1 << 20;

/// `nfsstat3` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Status {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    RoFs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Jukebox = 10008,
}

/// `ftype3` of a kind.
pub fn file_type(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => 1,
        FileKind::Directory => 2,
        FileKind::BlockDevice { .. } => 3,
        FileKind::CharDevice { .. } => 4,
        FileKind::Symlink => 5,
        FileKind::Socket => 6,
        FileKind::Fifo => 7,
    }
}

/// `nfstime3` of a timestamp (seconds wrap to 32 bits as NFSv3 has them).
pub fn write_time(writer: &mut XdrWriter, time: Timestamp) {
    writer.u32(time.seconds as u32).u32(time.nanos);
}

/// A `fattr3` of `attributes` for inode `fileid` of file system `fsid`.
pub fn write_fattr(writer: &mut XdrWriter, attributes: &Attributes, fileid: u64, fsid: u64) {
    let rdev = match attributes.kind {
        FileKind::CharDevice { rdev } | FileKind::BlockDevice { rdev } => rdev,
        _ => 0,
    };
    let used = match attributes.kind {
        FileKind::File | FileKind::Symlink => attributes.size_bytes.div_ceil(4096) * 4096,
        FileKind::Directory => 4096,
        _ => 0,
    };
    writer
        .u32(file_type(attributes.kind))
        .u32(attributes.mode & 0o7777)
        .u32(attributes.nlink)
        .u32(attributes.uid)
        .u32(attributes.gid)
        .u64(attributes.size_bytes)
        .u64(used)
        // specdata3: major, minor of Linux's makedev encoding.
        .u32((rdev >> 8) & 0xfff)
        .u32((rdev & 0xff) | ((rdev >> 12) & 0xfff00))
        .u64(fsid)
        .u64(fileid);
    write_time(writer, attributes.atime);
    write_time(writer, attributes.mtime);
    write_time(writer, attributes.ctime);
}

/// `post_op_attr`.
pub fn write_post_op(writer: &mut XdrWriter, attributes: Option<(&Attributes, u64)>, fsid: u64) {
    match attributes {
        Some((attributes, fileid)) => {
            writer.bool(true);
            write_fattr(writer, attributes, fileid, fsid);
        }
        None => {
            writer.bool(false);
        }
    }
}

/// `pre_op_attr` (size, mtime, ctime before the change).
pub fn write_pre_op(writer: &mut XdrWriter, attributes: Option<&Attributes>) {
    match attributes {
        Some(attributes) => {
            writer.bool(true).u64(attributes.size_bytes);
            write_time(writer, attributes.mtime);
            write_time(writer, attributes.ctime);
        }
        None => {
            writer.bool(false);
        }
    }
}

/// `set_atime`/`set_mtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// Leave it.
    DontChange,
    /// The server's clock.
    ServerTime,
    /// This time.
    ClientTime(Timestamp),
}

/// `sattr3`: the attributes to set; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAttributes {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size.
    pub size: Option<u64>,
    /// Access time.
    pub atime: SetTime,
    /// Modification time.
    pub mtime: SetTime,
}

fn read_time(reader: &mut XdrReader<'_>) -> Result<Timestamp, XdrError> {
    let seconds = reader.u32("seconds")?;
    let nanos = reader.u32("nanoseconds")?;
    if nanos >= 1_000_000_000 {
        return Err(XdrError::BadValue {
            what: "nanoseconds",
            value: nanos,
        });
    }
    Ok(Timestamp {
        seconds: i64::from(seconds),
        nanos,
    })
}

fn read_set_time(reader: &mut XdrReader<'_>) -> Result<SetTime, XdrError> {
    match reader.u32("time_how")? {
        0 => Ok(SetTime::DontChange),
        1 => Ok(SetTime::ServerTime),
        2 => Ok(SetTime::ClientTime(read_time(reader)?)),
        value => Err(XdrError::BadValue {
            what: "time_how",
            value,
        }),
    }
}

fn optional<T>(
    reader: &mut XdrReader<'_>,
    what: &'static str,
    read: impl FnOnce(&mut XdrReader<'_>) -> Result<T, XdrError>,
) -> Result<Option<T>, XdrError> {
    if reader.bool(what)? {
        Ok(Some(read(reader)?))
    } else {
        Ok(None)
    }
}

/// Reads a `sattr3`.
pub fn read_sattr(reader: &mut XdrReader<'_>) -> Result<SetAttributes, XdrError> {
    Ok(SetAttributes {
        mode: optional(reader, "set_mode", |reader| reader.u32("mode"))?,
        uid: optional(reader, "set_uid", |reader| reader.u32("uid"))?,
        gid: optional(reader, "set_gid", |reader| reader.u32("gid"))?,
        size: optional(reader, "set_size", |reader| reader.u64("size"))?,
        atime: read_set_time(reader)?,
        mtime: read_set_time(reader)?,
    })
}

/// Reads an `nfs_fh3` (its bytes, unchecked: [`super::handle`] checks them).
pub fn read_handle<'a>(reader: &mut XdrReader<'a>) -> Result<&'a [u8], XdrError> {
    reader.opaque("file handle", HANDLE_BYTES_MAX)
}

/// Reads a `filename3`.
pub fn read_name<'a>(reader: &mut XdrReader<'a>) -> Result<&'a [u8], XdrError> {
    // Longer names decode (so the answer can be NAMETOOLONG) up to a path's length.
    reader.opaque("name", PATH_BYTES_MAX)
}

/// `diropargs3`: a directory and a name in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirOp<'a> {
    /// The directory's handle.
    pub dir: &'a [u8],
    /// The name.
    pub name: &'a [u8],
}

/// Reads a `diropargs3`.
pub fn read_dirop<'a>(reader: &mut XdrReader<'a>) -> Result<DirOp<'a>, XdrError> {
    Ok(DirOp {
        dir: read_handle(reader)?,
        name: read_name(reader)?,
    })
}

/// How a CREATE creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateHow {
    /// Create or open (`UNCHECKED`).
    Unchecked(SetAttributes),
    /// Refuse if the name exists (`GUARDED`).
    Guarded(SetAttributes),
    /// Exclusive with a verifier a retry repeats (`EXCLUSIVE`).
    Exclusive([u8; 8]),
}

/// Reads a `createhow3`.
pub fn read_create_how(reader: &mut XdrReader<'_>) -> Result<CreateHow, XdrError> {
    match reader.u32("createmode")? {
        0 => Ok(CreateHow::Unchecked(read_sattr(reader)?)),
        1 => Ok(CreateHow::Guarded(read_sattr(reader)?)),
        2 => Ok(CreateHow::Exclusive(reader.fixed::<8>("createverf")?)),
        value => Err(XdrError::BadValue {
            what: "createmode",
            value,
        }),
    }
}

/// What a MKNOD makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MknodWhat {
    /// A character or block device (`NF3CHR`, `NF3BLK`): refused, devices are not served.
    Device,
    /// A socket or named pipe.
    Special(FileKind, SetAttributes),
    /// Another type (`NF3REG`, `NF3DIR`, …): `BADTYPE`.
    Other,
}

/// Reads a `mknoddata3`.
pub fn read_mknod(reader: &mut XdrReader<'_>) -> Result<MknodWhat, XdrError> {
    match reader.u32("ftype")? {
        3 | 4 => {
            read_sattr(reader)?;
            reader.u32("specdata1")?;
            reader.u32("specdata2")?;
            Ok(MknodWhat::Device)
        }
        6 => Ok(MknodWhat::Special(FileKind::Socket, read_sattr(reader)?)),
        7 => Ok(MknodWhat::Special(FileKind::Fifo, read_sattr(reader)?)),
        1 | 2 | 5 => Ok(MknodWhat::Other),
        value => Err(XdrError::BadValue { what: "ftype", value }),
    }
}

/// `stable_how` of a WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stable {
    /// May be buffered until a COMMIT.
    Unstable = 0,
    /// Data durable before the answer.
    DataSync = 1,
    /// Data and metadata durable before the answer.
    FileSync = 2,
}

/// Reads a `stable_how`.
pub fn read_stable(reader: &mut XdrReader<'_>) -> Result<Stable, XdrError> {
    match reader.u32("stable_how")? {
        0 => Ok(Stable::Unstable),
        1 => Ok(Stable::DataSync),
        2 => Ok(Stable::FileSync),
        value => Err(XdrError::BadValue {
            what: "stable_how",
            value,
        }),
    }
}

/// The `sattrguard3` of a SETATTR: the ctime the object must have.
pub fn read_guard(reader: &mut XdrReader<'_>) -> Result<Option<Timestamp>, XdrError> {
    optional(reader, "sattrguard", read_time)
}

/// The arguments of an NFSv3 call, decoded (with bounds) before anything else runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NfsArguments<'a> {
    Null,
    GetAttr(&'a [u8]),
    SetAttr {
        handle: &'a [u8],
        set: SetAttributes,
        guard: Option<Timestamp>,
    },
    Lookup(DirOp<'a>),
    Access {
        handle: &'a [u8],
        mask: u32,
    },
    ReadLink(&'a [u8]),
    Read {
        handle: &'a [u8],
        offset: u64,
        count: u32,
    },
    Write {
        handle: &'a [u8],
        offset: u64,
        count: u32,
        stable: Stable,
        data: &'a [u8],
    },
    Create {
        dirop: DirOp<'a>,
        how: CreateHow,
    },
    Mkdir {
        dirop: DirOp<'a>,
        set: SetAttributes,
    },
    Symlink {
        dirop: DirOp<'a>,
        set: SetAttributes,
        target: &'a [u8],
    },
    Mknod {
        dirop: DirOp<'a>,
        what: MknodWhat,
    },
    Remove(DirOp<'a>),
    Rmdir(DirOp<'a>),
    Rename {
        from: DirOp<'a>,
        to: DirOp<'a>,
    },
    Link {
        handle: &'a [u8],
        dirop: DirOp<'a>,
    },
    ReadDir {
        handle: &'a [u8],
        cookie: u64,
        verifier: [u8; 8],
        dircount: u32,
        maxcount: u32,
        plus: bool,
    },
    FsStat(&'a [u8]),
    FsInfo(&'a [u8]),
    PathConf(&'a [u8]),
    Commit {
        handle: &'a [u8],
        offset: u64,
        count: u32,
    },
}

impl<'a> NfsArguments<'a> {
    /// Decodes the arguments of `procedure`; `None` for a procedure NFSv3 does not have.
    pub fn decode(procedure: u32, reader: &mut XdrReader<'a>) -> Result<Option<NfsArguments<'a>>, XdrError> {
        let arguments = match procedure {
            0 => NfsArguments::Null,
            1 => NfsArguments::GetAttr(read_handle(reader)?),
            2 => NfsArguments::SetAttr {
                handle: read_handle(reader)?,
                set: read_sattr(reader)?,
                guard: read_guard(reader)?,
            },
            3 => NfsArguments::Lookup(read_dirop(reader)?),
            4 => NfsArguments::Access {
                handle: read_handle(reader)?,
                mask: reader.u32("access")?,
            },
            5 => NfsArguments::ReadLink(read_handle(reader)?),
            6 => NfsArguments::Read {
                handle: read_handle(reader)?,
                offset: reader.u64("offset")?,
                count: reader.u32("count")?,
            },
            7 => NfsArguments::Write {
                handle: read_handle(reader)?,
                offset: reader.u64("offset")?,
                count: reader.u32("count")?,
                stable: read_stable(reader)?,
                data: reader.opaque("data", IO_BYTES_MAX as usize)?,
            },
            8 => NfsArguments::Create {
                dirop: read_dirop(reader)?,
                how: read_create_how(reader)?,
            },
            9 => NfsArguments::Mkdir {
                dirop: read_dirop(reader)?,
                set: read_sattr(reader)?,
            },
            10 => NfsArguments::Symlink {
                dirop: read_dirop(reader)?,
                set: read_sattr(reader)?,
                target: reader.opaque("symlink data", PATH_BYTES_MAX)?,
            },
            11 => NfsArguments::Mknod {
                dirop: read_dirop(reader)?,
                what: read_mknod(reader)?,
            },
            12 => NfsArguments::Remove(read_dirop(reader)?),
            13 => NfsArguments::Rmdir(read_dirop(reader)?),
            14 => NfsArguments::Rename {
                from: read_dirop(reader)?,
                to: read_dirop(reader)?,
            },
            15 => NfsArguments::Link {
                handle: read_handle(reader)?,
                dirop: read_dirop(reader)?,
            },
            16 | 17 => {
                let plus = procedure == 17;
                let handle = read_handle(reader)?;
                let cookie = reader.u64("cookie")?;
                let verifier = reader.fixed::<8>("cookieverf")?;
                let (dircount, maxcount) = if plus {
                    (reader.u32("dircount")?, reader.u32("maxcount")?)
                } else {
                    let count = reader.u32("count")?;
                    (count, count)
                };
                NfsArguments::ReadDir {
                    handle,
                    cookie,
                    verifier,
                    dircount,
                    maxcount,
                    plus,
                }
            }
            18 => NfsArguments::FsStat(read_handle(reader)?),
            19 => NfsArguments::FsInfo(read_handle(reader)?),
            20 => NfsArguments::PathConf(read_handle(reader)?),
            21 => NfsArguments::Commit {
                handle: read_handle(reader)?,
                offset: reader.u64("offset")?,
                count: reader.u32("count")?,
            },
            _ => return Ok(None),
        };
        Ok(Some(arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_encode_as_fattr3() {
        let attributes = Attributes {
            kind: FileKind::CharDevice { rdev: (4 << 8) | 7 },
            mode: 0o620,
            uid: 1,
            gid: 2,
            size_bytes: 0,
            atime: Timestamp { seconds: 3, nanos: 4 },
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            nlink: 1,
            generation: 1,
        };
        let mut writer = XdrWriter::new();
        write_fattr(&mut writer, &attributes, 42, 9);
        let bytes = writer.into_bytes();
        assert_eq!(bytes.len(), 84, "fattr3 is 84 bytes");
        let mut reader = XdrReader::new(&bytes);
        assert_eq!(reader.u32("type").unwrap(), 4);
        assert_eq!(reader.u32("mode").unwrap(), 0o620);
        for _ in 0..3 {
            reader.u32("").unwrap();
        }
        reader.u64("size").unwrap();
        reader.u64("used").unwrap();
        assert_eq!((reader.u32("").unwrap(), reader.u32("").unwrap()), (4, 7));
        assert_eq!(reader.u64("fsid").unwrap(), 9);
        assert_eq!(reader.u64("fileid").unwrap(), 42);
    }

    #[test]
    fn sattr_and_create_how_decode_and_refuse_bad_values() {
        let mut writer = XdrWriter::new();
        writer
            .u32(1)
            .bool(true)
            .u32(0o640)
            .bool(false)
            .bool(false)
            .bool(true)
            .u64(10);
        writer.u32(2).u32(5).u32(6).u32(1);
        let bytes = writer.into_bytes();
        let how = read_create_how(&mut XdrReader::new(&bytes)).unwrap();
        let CreateHow::Guarded(set) = how else {
            panic!("guarded")
        };
        assert_eq!(set.mode, Some(0o640));
        assert_eq!(set.size, Some(10));
        assert_eq!(set.atime, SetTime::ClientTime(Timestamp { seconds: 5, nanos: 6 }));
        assert_eq!(set.mtime, SetTime::ServerTime);
        let mut bad = XdrWriter::new();
        bad.u32(3);
        assert!(read_create_how(&mut XdrReader::new(bad.as_bytes())).is_err());
        let mut late = XdrWriter::new();
        late.bool(false)
            .bool(false)
            .bool(false)
            .bool(false)
            .u32(2)
            .u32(0)
            .u32(2_000_000_000);
        assert!(read_sattr(&mut XdrReader::new(late.as_bytes())).is_err());
    }
}
