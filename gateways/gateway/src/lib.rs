//! `kiseki-gateway`: protocol front ends for clients that do not link the native client:
//! S3 ([`s3`]) and NFSv3 with MOUNT ([`nfs`]), over the same tenants and namespaces.
//!
//! **What it owns.** The tenants it serves ([`tenants`]: from the control plane, or a
//! tenants file ([`config`])), the S3 service: SigV4 authentication against each tenant's
//! access keys, buckets as top-level directories of the tenant's namespace, objects
//! as files under them ([`s3::paths`] documents the key ↔ path mapping), listings in key
//! order, multipart uploads, bucket versioning (`s3::versions`: a version tree of hard
//! links beside the buckets), copies that reuse the source's chunks, and the HTTP server
//! around it ([`server`]: bounded requests in flight, request ids, browser POST uploads
//! refused). Chunking, encryption and erasure coding happen here, in the gateway, through
//! `kiseki-client`: storage nodes only ever see sealed fragments.
//!
//! **Invariants.**
//! - I-K1: no plaintext leaves the gateway except to the S3 client that sent or asked
//!   for it; chunks are sealed before their fragments are sent.
//! - I-S1: an object's bytes become visible only whole: its data is durable before the
//!   one delta that names it (`ObjectPut`, `MultipartComplete`) is proposed, so a reader
//!   sees the old object or the new one, never a mix, and a gateway killed mid-upload
//!   leaves the previous object intact.
//! - I-S2: a request on a bucket the caller's tenant does not own is refused
//!   (`AccessDenied`) before it touches any namespace.
//! - I-S3: in a versioned bucket no acknowledged version is lost: the current version is
//!   linked into the version tree before the delta that replaces or hides it, which
//!   commits only while the key still holds that inode.
//! - Memory per request is bounded whatever the object's size: bodies stream through the
//!   chunker's window and a bounded number of chunks in flight.
//!
//! **Where it runs.** Its own process, on tokio (multi-threaded): s3s handlers are `Send`
//! futures and the native client is `Send + Sync`, so no bridge between runtimes is
//! needed ([decision 0011](../../../docs/decisions/0011-s3-gateway.md)).
#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod fuzzing;
pub mod nfs;
pub mod s3;
pub mod server;
pub mod tenants;

pub use error::GatewayError;
