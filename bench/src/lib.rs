//! Benchmark drivers behind `kiseki bench SUITE`.
//!
//! Every suite measures Kiseki and its baseline in the same invocation (fio on the same
//! device, memcpy, each pipeline stage alone, ...) and reports [`report::Case`]s through
//! one contract. Suites run on the calling machine; the engine suite pins one executor per
//! core exactly as `kiseki-server` does; the meta suite starts real `kiseki-server`
//! processes and drives them over the wire. Nothing here asserts timing: figures are
//! printed.
#![forbid(unsafe_code)]

mod cluster;
pub mod engine;
pub mod fio;
pub mod fuse;
pub mod io;
pub mod meta;
pub mod nfs;
pub mod pipeline;
pub mod report;
pub mod s3;
