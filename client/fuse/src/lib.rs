//! The FUSE mount of a Kiseki namespace (`kiseki-client-fuse`).
//!
//! **What it owns.** The kernel's view of one namespace: FUSE operations mapped onto the
//! native client's inode-addressed calls ([`fs::KisekiFs`]), the open-file tasks that
//! buffer writes and cache decoded chunks ([`files`]), the registry of open inodes and
//! the handle table ([`registry`]), the mount options and their environment variables
//! ([`options`]), the follower of the namespace's watch events that invalidates what the
//! kernel caches ([`watch`]), and the one mapping of client errors to errno values
//! ([`errno`]).
//!
//! **Invariants.**
//! - I-K1 holds here as in the client library: plaintext stays in this process; what
//!   leaves it is sealed fragments and wrapped keys.
//! - I-F1: a `flush` (every `close`) or `fsync` that returns success has committed every
//!   byte written through that file before it, on a majority of the file's shard, with
//!   the write quorum of each chunk durable (I-L5); a failed background write is reported
//!   by the next `flush` or `fsync`, never swallowed.
//! - I-F2: a read through the mount sees every write made through the mount before it,
//!   committed or still buffered (the open file's task overlays its buffers on the
//!   committed bytes).
//!
//! **Where it runs.** On a multi-threaded tokio runtime in the mounting process: the FUSE
//! event-loop threads only decode requests and start tasks; state is owned by tasks and
//! reached by bounded channels, and the handle table is a fixed array of atomic slots.
#![forbid(unsafe_code)]

pub mod control;
pub mod errno;
pub mod files;
pub mod fs;
pub mod options;
pub mod passthrough;
pub mod registry;
pub mod watch;

pub use fs::KisekiFs;
pub use options::{CacheMode, MountOptions};

/// The FUSE session configuration for `options`.
pub fn session_config(options: &MountOptions) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(options.fsname.clone()),
        fuser::MountOption::Subtype("kiseki".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.acl = if options.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(options.threads);
    config.clone_fd = options.threads > 1;
    config
}
