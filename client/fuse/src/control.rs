//! The mount's control socket: `kiseki stage` and `kiseki cache` reach the mount's cache
//! through it (protocol in `kiseki_client::cache::control`). The socket and the
//! mount's description live in the mount's cache pool, which is mode 0700.

use std::path::{Path, PathBuf};

use kiseki_client::cache::control::{serve_connection, ControlReply, ControlRequest, MountInfo};
use kiseki_client::cache::pool::{CONTROL_SOCKET, MOUNT_FILE};
use kiseki_client::cache::ChunkCache;
use kiseki_client::Namespace;

/// Writes the mount's description into its pool and starts answering on its socket.
pub fn start(cache: ChunkCache, namespace: Namespace, info: MountInfo) -> std::io::Result<()> {
    let pool = cache.pool_dir().to_path_buf();
    let text = serde_json::to_string_pretty(&info).map_err(std::io::Error::other)?;
    std::fs::write(pool.join(MOUNT_FILE), text)?;
    let listener = tokio::net::UnixListener::bind(pool.join(CONTROL_SOCKET))?;
    let mountpoint = info.mountpoint;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "accepting on the control socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (cache, namespace, mountpoint) = (cache.clone(), namespace.clone(), mountpoint.clone());
            tokio::spawn(async move {
                let answered = serve_connection(stream, |request| answer(cache, namespace, mountpoint, request)).await;
                if let Err(error) = answered {
                    tracing::debug!(%error, "control connection ended early");
                }
            });
        }
    });
    Ok(())
}

async fn answer(cache: ChunkCache, namespace: Namespace, mountpoint: PathBuf, request: ControlRequest) -> ControlReply {
    let failed = |message: String| ControlReply::Error { message };
    match request {
        ControlRequest::Stage { path } => {
            let Some(inside) = path_in_namespace(&mountpoint, &path) else {
                return failed(format!(
                    "{} is not inside the mount {}",
                    path.display(),
                    mountpoint.display()
                ));
            };
            let dataset = path.to_string_lossy().into_owned();
            tracing::info!(%dataset, "staging");
            match cache.stage(&namespace, &inside, &dataset).await {
                Ok(dataset) => ControlReply::Dataset { dataset },
                Err(error) => failed(format!("staging {}: {error}", path.display())),
            }
        }
        ControlRequest::Release { path } => match cache.release(&path.to_string_lossy()).await {
            Ok(Some(dataset)) => ControlReply::Dataset { dataset },
            Ok(None) => failed(format!("{} is not staged", path.display())),
            Err(error) => failed(error.to_string()),
        },
        ControlRequest::Status => match cache.datasets().await {
            Ok(datasets) => ControlReply::Datasets { datasets },
            Err(error) => failed(error.to_string()),
        },
        ControlRequest::Stats => match cache.stats().await {
            Ok(stats) => ControlReply::Stats { stats },
            Err(error) => failed(error.to_string()),
        },
    }
}

/// `path` (absolute, in the mount) as a path of the namespace (`/` is its root).
fn path_in_namespace(mountpoint: &Path, path: &Path) -> Option<String> {
    let inside = path.strip_prefix(mountpoint).ok()?;
    let mut text = String::from("/");
    for component in inside.components() {
        match component {
            std::path::Component::Normal(name) => {
                if text.len() > 1 {
                    text.push('/');
                }
                text.push_str(name.to_str()?);
            }
            _ => return None,
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_into_the_namespace() {
        let mount = Path::new("/mnt/k");
        assert_eq!(path_in_namespace(mount, Path::new("/mnt/k")), Some("/".into()));
        assert_eq!(path_in_namespace(mount, Path::new("/mnt/k/a/b")), Some("/a/b".into()));
        assert_eq!(path_in_namespace(mount, Path::new("/mnt/kx/a")), None);
        assert_eq!(path_in_namespace(mount, Path::new("/mnt/k/../etc")), None);
    }
}
