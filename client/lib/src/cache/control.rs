//! How `kiseki stage` and `kiseki cache` talk to a running mount: each mount's pool
//! holds `mount.json` (which mount it is) and `control.sock`, a Unix socket (mode 0600
//! in a 0700 directory) taking one JSON request per line and answering one JSON reply
//! per line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::index::{CacheStats, DatasetStatus};
use super::pool::{pool_is_live, CONTROL_SOCKET, MOUNT_FILE, POOL_PREFIX};
use crate::ClientError;

/// What a mount says about itself in its pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// Absolute mount point.
    pub mountpoint: PathBuf,
    /// Cluster address it mounts from.
    pub cluster: String,
    /// Namespace shard it mounts.
    pub namespace: u64,
    /// Cache mode (`organic`, `pinned`, `bypass`).
    pub cache_mode: String,
    /// The mount's process.
    pub pid: u32,
}

/// A request on the control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Fetch every chunk of the tree at `path` (absolute, inside the mount) and pin it.
    Stage {
        /// The dataset.
        path: PathBuf,
    },
    /// Unpin a staged dataset.
    Release {
        /// The dataset as it was staged.
        path: PathBuf,
    },
    /// The staged datasets.
    Status,
    /// Cache counters.
    Stats,
}

/// The answer to a [`ControlRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ControlReply {
    /// Staged (or released) this dataset.
    Dataset {
        /// The dataset.
        dataset: DatasetStatus,
    },
    /// The datasets staged in this mount.
    Datasets {
        /// Them.
        datasets: Vec<DatasetStatus>,
    },
    /// The mount's cache counters.
    Stats {
        /// Them.
        stats: CacheStats,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A live mount found under a cache directory.
#[derive(Clone, Debug)]
pub struct LiveMount {
    /// Its pool.
    pub pool: PathBuf,
    /// What it says about itself.
    pub info: MountInfo,
}

impl LiveMount {
    /// Sends one request and waits for the reply.
    pub async fn request(&self, request: &ControlRequest) -> Result<ControlReply, ClientError> {
        let socket = self.pool.join(CONTROL_SOCKET);
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|error| ClientError::Invalid(format!("{}: {error}", socket.display())))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).map_err(|error| ClientError::Invalid(error.to_string()))?;
        line.push('\n');
        write.write_all(line.as_bytes()).await?;
        write.shutdown().await?;
        let mut reply = String::new();
        BufReader::new(read).read_line(&mut reply).await?;
        serde_json::from_str(&reply)
            .map_err(|error| ClientError::Invalid(format!("bad reply from the mount's control socket: {error}")))
    }
}

/// The live mounts whose pools are under `cache_dir`.
pub fn live_mounts(cache_dir: &Path) -> Result<Vec<LiveMount>, ClientError> {
    let mut mounts = Vec::new();
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(mounts),
        Err(error) => return Err(error.into()),
    };
    for entry in entries {
        let pool = entry?.path();
        let is_pool = pool
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(POOL_PREFIX));
        if !is_pool || !pool_is_live(&pool) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(pool.join(MOUNT_FILE)) else {
            continue;
        };
        if let Ok(info) = serde_json::from_str(&text) {
            mounts.push(LiveMount { pool, info });
        }
    }
    mounts.sort_by(|a, b| a.info.mountpoint.cmp(&b.info.mountpoint));
    Ok(mounts)
}

/// The live mount that holds `path` (absolute, symlinks resolved): the one with the
/// longest mount point above it.
pub fn mount_of(mounts: &[LiveMount], path: &Path) -> Option<LiveMount> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.info.mountpoint))
        .max_by_key(|mount| mount.info.mountpoint.as_os_str().len())
        .cloned()
}

/// Reads one request line and answers it with `answer`, then closes the connection.
pub async fn serve_connection<F, Fut>(stream: tokio::net::UnixStream, answer: F) -> std::io::Result<()>
where
    F: FnOnce(ControlRequest) -> Fut,
    Fut: std::future::Future<Output = ControlReply>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A request is small; a peer sending more is cut off.
    let mut limited = tokio::io::AsyncReadExt::take(BufReader::new(read), 64 << 10);
    limited.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(request) => answer(request).await,
        Err(error) => ControlReply::Error {
            message: format!("malformed request: {error}"),
        },
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_keep_their_wire_form() {
        let request = ControlRequest::Stage {
            path: PathBuf::from("/mnt/data"),
        };
        let text = serde_json::to_string(&request).expect("json");
        assert_eq!(text, r#"{"op":"stage","path":"/mnt/data"}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(&text).expect("parse"), request);
        let status: ControlRequest = serde_json::from_str(r#"{"op":"status"}"#).expect("status");
        assert_eq!(status, ControlRequest::Status);
    }

    #[test]
    fn the_longest_mount_point_wins() {
        let mount = |point: &str| LiveMount {
            pool: PathBuf::from("/p"),
            info: MountInfo {
                mountpoint: PathBuf::from(point),
                cluster: String::new(),
                namespace: 1,
                cache_mode: "organic".into(),
                pid: 1,
            },
        };
        let mounts = vec![mount("/mnt"), mount("/mnt/inner"), mount("/other")];
        let found = mount_of(&mounts, Path::new("/mnt/inner/data")).expect("found");
        assert_eq!(found.info.mountpoint, PathBuf::from("/mnt/inner"));
        assert!(mount_of(&mounts, Path::new("/srv")).is_none());
        // A prefix of a name is not a parent.
        assert!(mount_of(&mounts, Path::new("/mntx")).is_none());
    }
}
