//! Following the namespace's watch events, so the kernel forgets what other clients
//! changed before its attribute and entry timeouts run out.
//!
//! One task polls the shard for events after the last sequence it saw (every
//! `poll_interval`) and turns them into kernel notifications: a changed inode has its
//! attributes and cached pages invalidated, a removed name and the old name of a renamed
//! entry are invalidated in their directory (a new name needs nothing: failed lookups
//! are not cached). Events of this mount's own changes are invalidated
//! too (harmless: the next access asks the cluster). After a gap (the shard trimmed
//! events this mount had not read) it goes on from the oldest event still held; what fell
//! in the gap expires with `meta_ttl_ms`.
//!
//! Notifications are written to the FUSE device by a thread of their own, never by a
//! runtime worker: the kernel handles an entry invalidation under the directory's lock,
//! which a request in that directory (a create waiting for this process's answer) may
//! hold. On a worker, the write would block the very task that answers the request; on
//! its own thread it waits until the request is answered. Events queue for that thread
//! in a bounded channel; when it is full, events are dropped (their entries and inodes
//! expire with `meta_ttl_ms`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fuser::{INodeNo, Notifier};
use kiseki_client::{ClientError, Namespace};
use kiseki_namespace::{NamespaceError, WatchEvent, WatchKind};

/// Events one poll asks for at most.
const EVENTS_PER_POLL: u32 = 4096;

/// Events waiting for the notifying thread at most.
const EVENTS_QUEUED_MAX: usize = 16_384;

/// Follows `namespace` until the mount ends (a notification fails with the device gone).
pub async fn follow(namespace: Namespace, notifier: Notifier, poll_interval: Duration) {
    let (events_out, events_in) = std::sync::mpsc::sync_channel::<WatchEvent>(EVENTS_QUEUED_MAX);
    let notifying = std::thread::Builder::new()
        .name("kiseki-fuse-notify".into())
        .spawn(move || {
            for event in events_in {
                if !notify(&notifier, &event) {
                    return;
                }
            }
        });
    if let Err(error) = notifying {
        tracing::warn!(%error, "watch: cannot start the notifying thread; caches expire by their TTL only");
        return;
    }
    let mut next = match catch_up(&namespace).await {
        Ok(next) => next,
        Err(error) => {
            tracing::warn!(%error, "watch: cannot read the namespace's events; caches expire by their TTL only");
            return;
        }
    };
    loop {
        tokio::time::sleep(poll_interval).await;
        match namespace.watch_since(next, EVENTS_PER_POLL).await {
            Ok(events) => {
                if let Some(last) = events.last() {
                    next = last.sequence + 1;
                }
                for event in events {
                    match events_out.try_send(event) {
                        Ok(()) => {}
                        Err(std::sync::mpsc::TrySendError::Full(_)) => {
                            tracing::debug!("watch: notification queue full; dropping events");
                            break;
                        }
                        // The notifying thread ended: the mount is gone.
                        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Err(ClientError::Namespace(NamespaceError::WatchGap { oldest_available, .. })) => {
                tracing::warn!(
                    next,
                    oldest_available,
                    "watch: events were trimmed before this mount read them"
                );
                next = oldest_available;
            }
            Err(error) => tracing::debug!(%error, "watch: poll failed; trying again"),
        }
    }
}

/// The sequence after the newest event held now (events before the mount need no
/// invalidation: the kernel has cached nothing yet).
async fn catch_up(namespace: &Namespace) -> Result<u64, ClientError> {
    let mut next = 1;
    loop {
        match namespace.watch_since(next, EVENTS_PER_POLL).await {
            Ok(events) => match events.last() {
                Some(last) if events.len() == EVENTS_PER_POLL as usize => next = last.sequence + 1,
                Some(last) => return Ok(last.sequence + 1),
                None => return Ok(next),
            },
            Err(ClientError::Namespace(NamespaceError::WatchGap { oldest_available, .. })) => next = oldest_available,
            Err(error) => return Err(error),
        }
    }
}

/// Tells the kernel what `event` changed; false once the mount is gone.
fn notify(notifier: &Notifier, event: &WatchEvent) -> bool {
    let inode = INodeNo(event.inode.0);
    let mut results = Vec::new();
    match &event.kind {
        WatchKind::DataModified | WatchKind::AttributesModified | WatchKind::XattrModified | WatchKind::Linked => {
            results.push(notifier.inval_inode(inode, 0, 0));
        }
        // A new name: no kernel caches its absence (lookups that fail are not cached).
        WatchKind::Created => {}
        WatchKind::Removed => {
            results.push(notifier.inval_inode(inode, 0, 0));
            if let (Some(parent), Some(name)) = (event.parent, &event.name) {
                results.push(notifier.inval_entry(INodeNo(parent.0), OsStr::from_bytes(name)));
            }
        }
        // Only the old name: invalidating the new one would detach the dentry this
        // mount's own rename just made (a directory someone works in would lose its
        // path); a stale entry elsewhere under the new name expires with the TTL.
        WatchKind::Renamed { from_parent, from_name } => {
            results.push(notifier.inval_inode(inode, 0, 0));
            results.push(notifier.inval_entry(INodeNo(from_parent.0), OsStr::from_bytes(from_name)));
        }
        WatchKind::MultipartBegun { .. }
        | WatchKind::MultipartPartStored { .. }
        | WatchKind::MultipartAborted { .. } => {}
    }
    // ENOENT: the kernel holds nothing of that inode or entry, which is fine; a closed
    // device (ENODEV, EBADF) means the mount is gone.
    !results.iter().any(
        |result| matches!(result, Err(error) if matches!(error.raw_os_error(), Some(libc::ENODEV) | Some(libc::EBADF))),
    )
}
