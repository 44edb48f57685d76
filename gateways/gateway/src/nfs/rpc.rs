//! ONC RPC (RFC 5531) over TCP: record marking, call headers with their credentials,
//! and replies. Input is bounded: a record is at most `record_bytes_max` (its fragments
//! are checked as their marks arrive, before their bytes are read), credentials at most
//! 400 bytes, AUTH_SYS names 255 bytes and 16 groups.

use super::xdr::{XdrError, XdrReader, XdrWriter};

/// The RPC protocol version this server speaks.
pub const RPC_VERSION: u32 = 2;
/// Largest credential or verifier body (RFC 5531).
pub const AUTH_BODY_BYTES_MAX: usize = 400;
/// Longest AUTH_SYS machine name.
pub const MACHINE_NAME_BYTES_MAX: usize = 255;
/// Most AUTH_SYS supplementary groups.
pub const GROUPS_MAX: usize = 16;

/// `AUTH_NONE`.
pub const AUTH_NONE: u32 = 0;
/// `AUTH_SYS` (`AUTH_UNIX`).
pub const AUTH_SYS: u32 = 1;

/// Why a call is refused at the RPC level (`MSG_DENIED`, `auth_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStat {
    /// A credential that does not decode.
    BadCredential = 1,
    /// A credential of a flavor this server does not take.
    RejectedCredential = 2,
    /// A flavor too weak for the program (AUTH_NONE for NFS).
    TooWeak = 5,
}

/// A call's credentials, as far as this server uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `AUTH_NONE`.
    None,
    /// `AUTH_SYS`: the caller's user, group and supplementary groups.
    Sys {
        /// The user.
        uid: u32,
        /// The primary group.
        gid: u32,
        /// Supplementary groups (at most 16).
        gids: Vec<u32>,
    },
    /// Any other flavor (RPCSEC_GSS, …): refused by every program here.
    Other(u32),
}

/// The header of a call; the procedure's arguments follow it in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeader {
    /// The transaction id the reply repeats.
    pub xid: u32,
    /// The program (100003 NFS, 100005 MOUNT).
    pub program: u32,
    /// Its version.
    pub version: u32,
    /// The procedure.
    pub procedure: u32,
    /// Who calls.
    pub credentials: Credentials,
}

/// What became of decoding a record as a call.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A call; `arguments` reads the procedure's arguments.
    Call(CallHeader, XdrReader<'a>),
    /// A reply must go back at once (RPC version mismatch, bad credentials).
    Refuse(u32, Vec<u8>),
    /// Not even an xid, or a message that is not a call: nothing to answer.
    Drop(String),
}

/// Decodes the call at the start of `record`.
pub fn decode_call(record: &[u8]) -> Decoded<'_> {
    let mut reader = XdrReader::new(record);
    let (Ok(xid), Ok(message_type)) = (reader.u32("xid"), reader.u32("message type")) else {
        return Decoded::Drop("a record too short for an RPC header".into());
    };
    if message_type != 0 {
        return Decoded::Drop(format!("message type {message_type} is not a call"));
    }
    let header = (|| -> Result<_, XdrError> {
        Ok((
            reader.u32("rpc version")?,
            reader.u32("program")?,
            reader.u32("version")?,
            reader.u32("procedure")?,
        ))
    })();
    let Ok((rpc_version, program, version, procedure)) = header else {
        return Decoded::Refuse(xid, garbage_args(xid));
    };
    if rpc_version != RPC_VERSION {
        return Decoded::Refuse(xid, rpc_mismatch(xid));
    }
    let credentials = match read_credentials(&mut reader) {
        Ok(credentials) => credentials,
        Err(_) => return Decoded::Refuse(xid, auth_error(xid, AuthStat::BadCredential)),
    };
    let verifier = reader
        .u32("verifier flavor")
        .and_then(|_| reader.opaque("verifier", AUTH_BODY_BYTES_MAX));
    if verifier.is_err() {
        return Decoded::Refuse(xid, auth_error(xid, AuthStat::BadCredential));
    }
    let header = CallHeader {
        xid,
        program,
        version,
        procedure,
        credentials,
    };
    Decoded::Call(header, reader)
}

fn read_credentials(reader: &mut XdrReader<'_>) -> Result<Credentials, XdrError> {
    let flavor = reader.u32("credential flavor")?;
    let body = reader.opaque("credential", AUTH_BODY_BYTES_MAX)?;
    match flavor {
        AUTH_NONE => Ok(Credentials::None),
        AUTH_SYS => {
            let mut body = XdrReader::new(body);
            let _stamp = body.u32("stamp")?;
            let _machine = body.opaque("machine name", MACHINE_NAME_BYTES_MAX)?;
            let uid = body.u32("uid")?;
            let gid = body.u32("gid")?;
            let count = body.count("gids", GROUPS_MAX, 4)?;
            let gids = (0..count).map(|_| body.u32("gid")).collect::<Result<Vec<u32>, _>>()?;
            Ok(Credentials::Sys { uid, gid, gids })
        }
        other => Ok(Credentials::Other(other)),
    }
}

fn reply_header(xid: u32) -> XdrWriter {
    let mut writer = XdrWriter::with_capacity(128);
    writer.u32(xid).u32(1);
    writer
}

fn accepted(xid: u32, status: u32) -> XdrWriter {
    let mut writer = reply_header(xid);
    // MSG_ACCEPTED, verifier AUTH_NONE with an empty body, accept_stat.
    writer.u32(0).u32(AUTH_NONE).u32(0).u32(status);
    writer
}

/// The start of a successful reply; the procedure's results follow.
pub fn success(xid: u32) -> XdrWriter {
    accepted(xid, 0)
}

/// `PROG_UNAVAIL`: no such program here.
pub fn program_unavailable(xid: u32) -> Vec<u8> {
    accepted(xid, 1).into_bytes()
}

/// `PROG_MISMATCH`: the program exists in versions `low..=high` only.
pub fn program_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut writer = accepted(xid, 2);
    writer.u32(low).u32(high);
    writer.into_bytes()
}

/// `PROC_UNAVAIL`: no such procedure in the program.
pub fn procedure_unavailable(xid: u32) -> Vec<u8> {
    accepted(xid, 3).into_bytes()
}

/// `GARBAGE_ARGS`: the arguments do not decode.
pub fn garbage_args(xid: u32) -> Vec<u8> {
    accepted(xid, 4).into_bytes()
}

/// `SYSTEM_ERR`: the server failed for a reason of its own.
pub fn system_error(xid: u32) -> Vec<u8> {
    accepted(xid, 5).into_bytes()
}

/// `MSG_DENIED` / `RPC_MISMATCH`: only RPC version 2 is spoken.
pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut writer = reply_header(xid);
    writer.u32(1).u32(0).u32(RPC_VERSION).u32(RPC_VERSION);
    writer.into_bytes()
}

/// `MSG_DENIED` / `AUTH_ERROR` with `status`.
pub fn auth_error(xid: u32, status: AuthStat) -> Vec<u8> {
    let mut writer = reply_header(xid);
    writer.u32(1).u32(1).u32(status as u32);
    writer.into_bytes()
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The record marks announce more than `record_bytes_max`.
    TooLarge {
        /// Bytes announced so far.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// Reassembles records from the byte stream of a connection (RFC 5531 §11): each
/// fragment starts with a 4-byte mark (last-fragment bit, 31-bit length).
#[derive(Debug)]
pub struct RecordReader {
    record_bytes_max: usize,
    buffered: Vec<u8>,
    /// Fragments of the record being assembled.
    record: Vec<u8>,
}

impl RecordReader {
    /// A reader accepting records of at most `record_bytes_max` bytes.
    pub fn new(record_bytes_max: usize) -> RecordReader {
        RecordReader {
            record_bytes_max,
            buffered: Vec::new(),
            record: Vec::new(),
        }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffered.extend_from_slice(bytes);
    }

    /// Bytes held (buffered and of the record being assembled).
    pub fn held_bytes(&self) -> usize {
        self.buffered.len() + self.record.len()
    }

    /// The next whole record, `None` until one has arrived; `TooLarge` (the connection
    /// must be closed) as soon as a mark would take the record past its limit.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        loop {
            if self.buffered.len() < 4 {
                return Ok(None);
            }
            let mark = u32::from_be_bytes([self.buffered[0], self.buffered[1], self.buffered[2], self.buffered[3]]);
            let last = mark & 0x8000_0000 != 0;
            let length = (mark & 0x7fff_ffff) as usize;
            let total = self.record.len().saturating_add(length);
            if total > self.record_bytes_max {
                return Err(RecordError::TooLarge {
                    bytes: total,
                    max: self.record_bytes_max,
                });
            }
            if self.buffered.len() < 4 + length {
                return Ok(None);
            }
            self.record.extend_from_slice(&self.buffered[4..4 + length]);
            self.buffered.drain(..4 + length);
            if last {
                return Ok(Some(std::mem::take(&mut self.record)));
            }
        }
    }
}

/// `body` with its record mark (one last fragment).
pub fn frame_record(body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&(0x8000_0000 | body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(flavor: u32, credential: &[u8]) -> Vec<u8> {
        let mut writer = XdrWriter::new();
        writer.u32(9).u32(0).u32(2).u32(100_003).u32(3).u32(1);
        writer.u32(flavor).opaque(credential).u32(0).opaque(&[]);
        writer.u32(0xdead_beef);
        writer.into_bytes()
    }

    fn auth_sys(uid: u32, gids: &[u32]) -> Vec<u8> {
        let mut writer = XdrWriter::new();
        writer.u32(1).opaque(b"host").u32(uid).u32(uid);
        writer.u32(gids.len() as u32);
        for gid in gids {
            writer.u32(*gid);
        }
        writer.into_bytes()
    }

    #[test]
    fn calls_decode_with_their_credentials() {
        let record = call(AUTH_SYS, &auth_sys(1000, &[10, 20]));
        let Decoded::Call(header, mut arguments) = decode_call(&record) else {
            panic!("a call")
        };
        assert_eq!(
            (header.xid, header.program, header.version, header.procedure),
            (9, 100_003, 3, 1)
        );
        assert_eq!(
            header.credentials,
            Credentials::Sys {
                uid: 1000,
                gid: 1000,
                gids: vec![10, 20]
            }
        );
        assert_eq!(arguments.u32("argument").unwrap(), 0xdead_beef);
        let Decoded::Call(header, _) = decode_call(&call(6, &[1, 2, 3, 4])) else {
            panic!("a call")
        };
        assert_eq!(header.credentials, Credentials::Other(6));
    }

    #[test]
    fn bad_headers_get_rpc_level_answers() {
        assert!(matches!(decode_call(&[0, 0, 0, 1]), Decoded::Drop(_)));
        let mut reply = call(AUTH_NONE, &[]);
        reply[7] = 1;
        assert!(matches!(decode_call(&reply), Decoded::Drop(_)));
        let mut version_3 = call(AUTH_NONE, &[]);
        version_3[11] = 3;
        let Decoded::Refuse(9, answer) = decode_call(&version_3) else {
            panic!("RPC_MISMATCH")
        };
        assert_eq!(answer, rpc_mismatch(9));
        let too_many_groups = auth_sys(0, &[0; 17]);
        assert!(matches!(
            decode_call(&call(AUTH_SYS, &too_many_groups)),
            Decoded::Refuse(9, _)
        ));
        assert!(matches!(decode_call(&call(AUTH_SYS, &[0, 0])), Decoded::Refuse(9, _)));
        assert!(matches!(
            decode_call(&call(AUTH_NONE, &[])[..20]),
            Decoded::Refuse(9, _)
        ));
    }

    #[test]
    fn records_reassemble_and_oversized_marks_are_refused() {
        let mut reader = RecordReader::new(16);
        reader.feed(&[0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(reader.next_record(), Ok(None));
        reader.feed(&[0x80, 0, 0, 2, 4]);
        assert_eq!(reader.next_record(), Ok(None));
        reader.feed(&[5]);
        assert_eq!(reader.next_record(), Ok(Some(vec![1, 2, 3, 4, 5])));
        reader.feed(&frame_record(b"ok"));
        assert_eq!(reader.next_record(), Ok(Some(b"ok".to_vec())));
        reader.feed(&[0x80, 0, 0, 17]);
        assert!(matches!(reader.next_record(), Err(RecordError::TooLarge { .. })));
        let mut reader = RecordReader::new(16);
        reader.feed(&[0, 0, 0, 10]);
        reader.feed(&[0; 10]);
        reader.feed(&[0x80, 0, 0, 10]);
        assert!(matches!(
            reader.next_record(),
            Err(RecordError::TooLarge { bytes: 20, .. })
        ));
    }
}
