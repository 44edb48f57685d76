//! Kiseki's one wire protocol between its processes (storage nodes, clients, gateways):
//! frames, multiplexed RPC connections and the transports under them.
//!
//! **What it owns.** The frame format ([`frame`]: a 32-byte header with magic, version,
//! kind, message type, request id, body length and CRC32C of header and body; the
//! encoder and an incremental decoder), message bodies ([`encode_body`] /
//! [`decode_body`]: rkyv 0.8 archives validated with bytecheck), the RPC layer
//! ([`RpcClient`], [`serve_connection`], [`RpcServer`], [`Service`]), byte streams
//! ([`ByteStream`]: the runtime's TCP stream, [`TlsStream`], [`MemoryStream`]) and
//! transports ([`Transport`]: [`TcpTransport`], [`TlsTransport`] with mutual TLS 1.3 on
//! rustls and aws-lc-rs), plus a development CA ([`tls::generate_dev_ca`],
//! [`tls::issue_certificate`]). The format and its choices are recorded in
//! `docs/decisions/0006-wire-protocol.md`.
//!
//! **Invariants.**
//! - I-W1: a body is validated (bytecheck over the whole archive) before any use; the
//!   only way from bytes to a message is [`decode_body`].
//! - I-W2: bad input from the network never panics: a malformed frame is a typed
//!   [`NetError`], answered with a GoAway that carries the reason, and closes only the
//!   connection it came on.
//! - I-W3: everything a connection holds is bounded: frame size (`frame_bytes_max`),
//!   requests in flight on both sides (`in_flight_max`; a full client window waits or
//!   answers `Busy`, a server answers excess requests `Busy`), bytes queued for sending
//!   (`outbox_bytes_max`), connections per server (`connections_max`).
//!
//! **Features.** `runtime` (default): connections, servers and transports on
//! `kiseki-runtime` executors, as storage nodes run them. `tokio`: [`tokio_rpc`], the
//! calling side of a connection for tokio processes (clients, gateways), and
//! [`serve_tokio`], the serving side for tokio processes (the key server, the control plane). Without
//! `runtime`, the crate links no part of the per-core runtime: frames, bodies, error
//! codes and TLS configuration only.
//!
//! **Where it runs.** A connection lives on one core: its reader task, writer task and
//! request handlers are `!Send` tasks of the `kiseki-runtime` executor that made it, and
//! its state is `Rc`/`RefCell`/`Cell` (I-T1). On a storage node each core runs its own
//! listener and connections; clients run one executor per thread. Frames and bodies
//! ([`frame`], [`body`]) need no runtime and also serve tokio processes and fuzzing.
#![forbid(unsafe_code)]

pub mod body;
mod error;
pub mod frame;
#[cfg(feature = "runtime")]
mod rpc;
#[cfg(feature = "runtime")]
mod stream;
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio_rpc;
#[cfg(feature = "tokio")]
mod tokio_server;
#[cfg(feature = "runtime")]
mod transport;

/// The rkyv this crate's wire format is built on (version 0.8, features pinned), for API
/// crates to derive their messages with: `#[derive(kiseki_net::rkyv::Archive, ...)]`
/// with `#[rkyv(crate = kiseki_net::rkyv)]`, or depend on the same version directly.
pub use rkyv;

pub use body::{decode_body, encode_answer, encode_body, ErrorBody};
pub use error::{ErrorCode, NetError, RemoteError};
pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameHeader, FrameKind};
#[cfg(feature = "runtime")]
pub use rpc::{serve_connection, PeerInfo, Request, RpcClient, RpcServer, Service};
pub use rpc_config::RpcConfig;
#[cfg(feature = "runtime")]
pub use stream::{BufferFuture, ByteStream, LocalBoxFuture, MemoryStream, RECV_BYTES_DEFAULT};
pub use tls::TlsFiles;
#[cfg(feature = "runtime")]
pub use tls::{TlsStream, TlsTransport};
#[cfg(feature = "tokio")]
pub use tokio_server::{serve_admin, serve_tokio, stop_on_signals, stopped, TokioPeer, TokioService};
#[cfg(feature = "runtime")]
pub use transport::{Accepted, Listener, TcpTransport, Transport};

mod rpc_config;
