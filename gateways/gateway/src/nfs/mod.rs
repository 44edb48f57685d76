//! The NFS front end: NFSv3 and MOUNT v3 (RFC 1813) over TCP on one port, for every
//! namespace the control plane knows ([`exports`]), reading and writing through the
//! native client like the S3 front end (chunks are sealed here; nodes see ciphertext).
//!
//! **Layers.** [`xdr`] (bounded XDR), [`rpc`] (record marking, call headers, AUTH_SYS,
//! RPC-level refusals), [`proto`] (NFSv3 types and arguments), [`handle`] (file handles
//! authenticated by a MAC under a key from the key server), [`access`] (squashing and
//! mode-bit checks), [`write`] (unstable writes buffered per file), [`errors`] (the one
//! mapping to `nfsstat3`), [`mount`] and [`ops`] (the procedures). The file-handle and
//! attribute layer ([`handle`], [`access`], [`proto::write_fattr`]) does not depend on
//! NFSv3's procedures, so an NFSv4.1 front end can sit beside it.
//!
//! **Invariants.**
//! - I-H1: a file handle is honoured only if its MAC verifies under the cluster's handle
//!   key and its export and namespace incarnation still exist; otherwise `BADHANDLE` or
//!   `STALE`, never another object.
//! - I-H2: buffered unstable writes stay within `buffer_bytes_max`; a COMMIT answers
//!   success only once every byte written before it to the file is committed.
//! - I-W2 (for NFS): no input panics the gateway: records are bounded before they are
//!   read, every length before it is allocated, and bad input is answered at the RPC
//!   level (`GARBAGE_ARGS`, `PROC_UNAVAIL`, `PROG_MISMATCH`, `AUTH_ERROR`) or closes the
//!   connection.
//!
//! **Where it runs.** Its own `kiseki-gateway nfs` process, on tokio: each connection is
//! a reader task that decodes records and starts one task per call (at most
//! `calls_in_flight_max` per connection), and a writer task that sends replies.

pub mod access;
pub mod errors;
pub mod exports;
pub mod handle;
pub mod mount;
pub mod ops;
pub mod proto;
pub mod rpc;
pub mod write;
pub mod xdr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use exports::Exports;
use handle::HandleKey;
use proto::{MOUNT_PROGRAM, NFS_PROGRAM, VERSION_3};
use rpc::{Decoded, RecordReader};
use write::WriteBack;

/// Limits of the NFS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfsLimits {
    /// Largest record (a 1 MiB WRITE and its header fit).
    pub record_bytes_max: usize,
    /// Calls of one connection handled at once; the connection is read no further until
    /// one ends (TCP pushes back on the client).
    pub calls_in_flight_max: usize,
    /// Connections served at once; more are closed when accepted.
    pub connections_max: usize,
}

impl Default for NfsLimits {
    fn default() -> NfsLimits {
        NfsLimits {
            record_bytes_max: (proto::IO_BYTES_MAX as usize) + (64 << 10),
            calls_in_flight_max: 32,
            connections_max: 1024,
        }
    }
}

/// Counters of the NFS server, for its metrics endpoint.
#[derive(Debug, Default)]
pub struct NfsCounters {
    /// Calls answered.
    pub calls: AtomicU64,
    /// Calls answered at the RPC level (bad arguments, program, procedure, credentials).
    pub refused: AtomicU64,
    /// Connections closed for a bad record.
    pub bad_records: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Bytes written.
    pub written_bytes: AtomicU64,
    /// Calls per NFSv3 procedure (0 to 21).
    pub procedures: [AtomicU64; 22],
}

/// The NFS server of a gateway.
#[derive(Debug)]
pub struct NfsService {
    /// The exports.
    pub exports: Arc<Exports>,
    /// Makes and checks file handles.
    pub handles: HandleKey,
    /// Buffered unstable writes.
    pub writes: WriteBack,
    /// Its limits.
    pub limits: NfsLimits,
    /// Its counters.
    pub counters: NfsCounters,
}

/// One call being answered.
#[derive(Debug)]
pub struct CallContext {
    /// The transaction id.
    pub xid: u32,
    /// The caller's credentials.
    pub credentials: rpc::Credentials,
    /// The caller's address.
    pub peer: IpAddr,
}

impl NfsService {
    /// A server over `exports` with handles signed by `handles`.
    pub fn new(exports: Arc<Exports>, handles: HandleKey, writes: WriteBack, limits: NfsLimits) -> NfsService {
        NfsService {
            exports,
            handles,
            writes,
            limits,
            counters: NfsCounters::default(),
        }
    }

    /// Prometheus text of the counters.
    pub fn metrics_text(&self) -> String {
        let counters = &self.counters;
        let value = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "# TYPE kiseki_nfs_calls_total counter\nkiseki_nfs_calls_total {}\n\
             # TYPE kiseki_nfs_refused_total counter\nkiseki_nfs_refused_total {}\n\
             # TYPE kiseki_nfs_bad_records_total counter\nkiseki_nfs_bad_records_total {}\n\
             # TYPE kiseki_nfs_read_bytes_total counter\nkiseki_nfs_read_bytes_total {}\n\
             # TYPE kiseki_nfs_written_bytes_total counter\nkiseki_nfs_written_bytes_total {}\n\
             # TYPE kiseki_nfs_exports gauge\nkiseki_nfs_exports {}\n{}",
            value(&counters.calls),
            value(&counters.refused),
            value(&counters.bad_records),
            value(&counters.read_bytes),
            value(&counters.written_bytes),
            self.exports.table().by_id.len(),
            self.procedure_lines(),
        )
    }

    fn procedure_lines(&self) -> String {
        const NAMES: [&str; 22] = [
            "null",
            "getattr",
            "setattr",
            "lookup",
            "access",
            "readlink",
            "read",
            "write",
            "create",
            "mkdir",
            "symlink",
            "mknod",
            "remove",
            "rmdir",
            "rename",
            "link",
            "readdir",
            "readdirplus",
            "fsstat",
            "fsinfo",
            "pathconf",
            "commit",
        ];
        let mut text = String::from("# TYPE kiseki_nfs_procedure_calls_total counter\n");
        for (name, count) in NAMES.iter().zip(&self.counters.procedures) {
            text.push_str(&format!(
                "kiseki_nfs_procedure_calls_total{{procedure=\"{name}\"}} {}\n",
                count.load(Ordering::Relaxed)
            ));
        }
        text
    }

    /// The reply to one record, if it deserves one.
    pub async fn answer(&self, record: &[u8], peer: IpAddr) -> Option<Vec<u8>> {
        match rpc::decode_call(record) {
            Decoded::Drop(reason) => {
                tracing::debug!(%peer, reason, "record dropped");
                None
            }
            Decoded::Refuse(_, reply) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Some(reply)
            }
            Decoded::Call(header, mut arguments) => {
                self.counters.calls.fetch_add(1, Ordering::Relaxed);
                let context = CallContext {
                    xid: header.xid,
                    credentials: header.credentials.clone(),
                    peer,
                };
                if header.program == NFS_PROGRAM {
                    if let Some(counter) = self.counters.procedures.get(header.procedure as usize) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let reply = match (header.program, header.version) {
                    (NFS_PROGRAM, VERSION_3) => ops::call(self, &context, header.procedure, &mut arguments).await,
                    (MOUNT_PROGRAM, VERSION_3) => mount::call(self, &context, header.procedure, &mut arguments).await,
                    (NFS_PROGRAM | MOUNT_PROGRAM, _) => Err(rpc::program_mismatch(header.xid, VERSION_3, VERSION_3)),
                    _ => Err(rpc::program_unavailable(header.xid)),
                };
                Some(reply.unwrap_or_else(|refusal| {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    refusal
                }))
            }
        }
    }

    /// Commits every buffered write (clean shutdown).
    pub async fn flush(&self) {
        self.writes.flush_all().await;
    }
}

/// Serves NFS and MOUNT on `listener` until `shutdown` completes; buffered writes are
/// committed before this returns.
pub async fn serve_nfs(
    listener: tokio::net::TcpListener,
    service: Arc<NfsService>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(service.limits.connections_max.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%peer, "too many NFS connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(reason) = connection(stream, peer, service).await {
                tracing::debug!(%peer, reason, "NFS connection closed");
            }
        });
    }
    service.flush().await;
    Ok(())
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, service: Arc<NfsService>) -> Result<(), String> {
    let (mut read_half, mut write_half) = stream.into_split();
    let in_flight = service.limits.calls_in_flight_max.max(1);
    let (replies, mut outgoing) = mpsc::channel::<Vec<u8>>(in_flight);
    let writer = tokio::spawn(async move {
        while let Some(reply) = outgoing.recv().await {
            if write_half.write_all(&rpc::frame_record(&reply)).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });
    let calls = Arc::new(Semaphore::new(in_flight));
    let mut records = RecordReader::new(service.limits.record_bytes_max);
    let mut buffer = vec![0u8; 256 << 10];
    let result = loop {
        match records.next_record() {
            Ok(Some(record)) => {
                let Ok(permit) = Arc::clone(&calls).acquire_owned().await else {
                    break Err("closing".to_owned());
                };
                let (service, replies) = (Arc::clone(&service), replies.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(reply) = service.answer(&record, peer.ip()).await {
                        let _ = replies.send(reply).await;
                    }
                });
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                service.counters.bad_records.fetch_add(1, Ordering::Relaxed);
                break Err(format!("bad record: {error:?}"));
            }
        }
        match read_half.read(&mut buffer).await {
            Ok(0) => break Ok(()),
            Ok(count) => records.feed(&buffer[..count]),
            Err(error) => break Err(error.to_string()),
        }
    };
    // Calls still running get to send their replies, then the writer ends.
    let _ = calls.acquire_many(in_flight as u32).await;
    drop(replies);
    let _ = writer.await;
    result
}

/// The entry point of the NFS fuzz target (`gateways/gateway/fuzz`, target `nfs`, run by
/// `scripts/fuzz.sh`): arbitrary bytes as a TCP stream of records, each decoded as a call
/// header with its credentials and, for NFSv3 and MOUNT, its arguments; every handle found
/// is checked against a key. Nothing may panic or allocate more than the input allows.
pub fn fuzz_stream(bytes: &[u8]) {
    let key = HandleKey::new([3; 32]);
    let mut records = RecordReader::new(NfsLimits::default().record_bytes_max);
    records.feed(bytes);
    while let Ok(Some(record)) = records.next_record() {
        let Decoded::Call(header, mut arguments) = rpc::decode_call(&record) else {
            continue;
        };
        match (header.program, header.version) {
            (NFS_PROGRAM, VERSION_3) => {
                if let Ok(Some(proto::NfsArguments::GetAttr(handle) | proto::NfsArguments::ReadLink(handle))) =
                    proto::NfsArguments::decode(header.procedure, &mut arguments)
                {
                    let _ = key.decode(handle);
                }
            }
            (MOUNT_PROGRAM, VERSION_3) => {
                let _ = arguments.opaque("dirpath", 1024);
            }
            _ => {}
        }
    }
}
