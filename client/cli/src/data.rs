//! The data commands (`kiseki put`, `get`, `ls`, `stat`, `mkdir`, `rm`, `mv`): files of a
//! namespace through the native client, chunked and encrypted in this process.

use std::path::PathBuf;

use anyhow::Context;
use kiseki_client::{open_namespace, parse_durability, Namespace, Profile};
use kiseki_namespace::{Attributes, FileKind, InodeId, ReadPiece};
use kiseki_pipeline::Durability;

/// Where the cluster is and whose namespace to use; shared by every data command.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The client profile: the cluster, control plane, key server, certificate, tenant
    /// and namespace (`kiseki up` writes `DATA_DIR/client.json`).
    #[arg(long, env = "KISEKI_PROFILE", default_value = "./kiseki-data/client.json")]
    pub profile: PathBuf,
    /// The tenant; default: the profile's.
    #[arg(long, env = "KISEKI_TENANT")]
    pub tenant: Option<String>,
    /// The namespace; default: the profile's.
    #[arg(long, env = "KISEKI_NAMESPACE")]
    pub namespace: Option<String>,
    /// Durability of new chunks: `Nx` copies (`3x`) or `K+M` erasure coding (`4+2`);
    /// default: the namespace's.
    #[arg(long, value_parser = parse_durability)]
    pub durability: Option<Durability>,
}

impl Target {
    /// The profile with this command's overrides.
    pub fn load(&self) -> anyhow::Result<Profile> {
        let mut profile =
            Profile::load(&self.profile).with_context(|| "reading the profile (is `kiseki up` running here?)")?;
        if let Some(tenant) = &self.tenant {
            profile.tenant.clone_from(tenant);
        }
        if let Some(namespace) = &self.namespace {
            profile.namespace.clone_from(namespace);
        }
        Ok(profile)
    }
}

/// One data command.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Writes a local file (or `-` for standard input) to a path in the namespace.
    Put {
        #[command(flatten)]
        target: Target,
        /// Local file, or `-`.
        local: PathBuf,
        /// Path in the namespace; its parent directories are created.
        remote: String,
    },
    /// Reads a file of the namespace to a local file (or `-` for standard output).
    Get {
        #[command(flatten)]
        target: Target,
        /// Path in the namespace.
        remote: String,
        /// Local file, or `-`.
        #[arg(default_value = "-")]
        local: PathBuf,
    },
    /// Lists a directory.
    Ls {
        #[command(flatten)]
        target: Target,
        /// Directory in the namespace.
        #[arg(default_value = "/")]
        path: String,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Attributes of a path.
    Stat {
        #[command(flatten)]
        target: Target,
        /// Path in the namespace.
        path: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Creates a directory.
    Mkdir {
        #[command(flatten)]
        target: Target,
        /// Path in the namespace.
        path: String,
        /// Creates missing parents; an existing directory is not an error.
        #[arg(short, long)]
        parents: bool,
    },
    /// Removes a file or an empty directory.
    Rm {
        #[command(flatten)]
        target: Target,
        /// Path in the namespace.
        path: String,
    },
    /// Renames a file or directory.
    Mv {
        #[command(flatten)]
        target: Target,
        /// Current path.
        from: String,
        /// New path.
        to: String,
    },
}

async fn open(target: &Target) -> anyhow::Result<Namespace> {
    let profile = target.load()?;
    let (namespace, _) = open_namespace(&profile, &profile.tenant, &profile.namespace, target.durability)
        .await
        .with_context(|| format!("opening namespace {}/{}", profile.tenant, profile.namespace))?;
    Ok(namespace)
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice { .. } => "char-device",
        FileKind::BlockDevice { .. } => "block-device",
    }
}

/// Where a file's bytes live: inline in its inode, or in extents over chunks.
#[derive(Default)]
struct Layout {
    inline_bytes: u64,
    extents: u64,
    extent_bytes: u64,
}

/// The layout of the file `inode` of `size_bytes`, piece by piece.
async fn layout_of(namespace: &Namespace, inode: InodeId, size_bytes: u64) -> anyhow::Result<Layout> {
    let mut layout = Layout::default();
    let mut position = 0;
    while position < size_bytes {
        let pieces = namespace.pieces(inode, position, size_bytes - position).await?;
        let Some(last) = pieces.last().map(ReadPiece::end_bytes) else {
            break;
        };
        for piece in &pieces {
            match piece {
                ReadPiece::Inline { length_bytes, .. } => layout.inline_bytes += length_bytes,
                ReadPiece::Extent { extent, .. } => {
                    layout.extents += 1;
                    layout.extent_bytes += extent.length_bytes;
                }
                ReadPiece::Hole { .. } => {}
            }
        }
        position = last;
    }
    Ok(layout)
}

fn attributes_json(path: &str, inode: u64, attributes: &Attributes, layout: &Layout) -> String {
    serde_json::json!({
        "inline_bytes": layout.inline_bytes,
        "extents": layout.extents,
        "extent_bytes": layout.extent_bytes,
        "path": path,
        "inode": inode,
        "kind": kind_name(attributes.kind),
        "mode": format!("{:o}", attributes.mode),
        "uid": attributes.uid,
        "gid": attributes.gid,
        "size_bytes": attributes.size_bytes,
        "nlink": attributes.nlink,
        "mtime": attributes.mtime.seconds,
        "generation": attributes.generation,
    })
    .to_string()
}

impl DataCommand {
    fn target(&self) -> &Target {
        match self {
            DataCommand::Put { target, .. }
            | DataCommand::Get { target, .. }
            | DataCommand::Ls { target, .. }
            | DataCommand::Stat { target, .. }
            | DataCommand::Mkdir { target, .. }
            | DataCommand::Rm { target, .. }
            | DataCommand::Mv { target, .. } => target,
        }
    }
}

/// Runs one data command on a tokio runtime of its own.
pub fn run(command: DataCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: DataCommand) -> anyhow::Result<()> {
    let namespace = open(command.target()).await?;
    match command {
        DataCommand::Put { local, remote, .. } => {
            if let Some((parent, _)) = remote.trim_end_matches('/').rsplit_once('/') {
                if !parent.is_empty() {
                    namespace.mkdir_all(parent, 0o755).await?;
                }
            }
            let summary = if local.as_os_str() == "-" {
                namespace.write_file(&remote, tokio::io::stdin(), 0o644).await?
            } else {
                let file = tokio::fs::File::open(&local)
                    .await
                    .with_context(|| format!("opening {}", local.display()))?;
                namespace.write_file(&remote, file, 0o644).await?
            };
            eprintln!("{remote}: {} bytes in {} chunk(s)", summary.bytes, summary.chunks);
        }
        DataCommand::Get { remote, local, .. } => {
            let summary = if local.as_os_str() == "-" {
                namespace.read_file(&remote, &mut tokio::io::stdout()).await?
            } else {
                let mut file = tokio::fs::File::create(&local)
                    .await
                    .with_context(|| format!("creating {}", local.display()))?;
                let summary = namespace.read_file(&remote, &mut file).await?;
                file.sync_all().await?;
                summary
            };
            if summary.degraded_chunks > 0 {
                eprintln!(
                    "{remote}: {} of {} chunk(s) read degraded (fragments missing)",
                    summary.degraded_chunks, summary.chunks
                );
            }
        }
        DataCommand::Ls { path, json, .. } => {
            for entry in namespace.list(&path).await? {
                let name = String::from_utf8_lossy(&entry.name);
                if json {
                    let line = serde_json::json!({
                        "name": name,
                        "inode": entry.inode.0,
                        "kind": kind_name(entry.kind),
                    });
                    println!("{line}");
                } else if entry.kind == FileKind::Directory {
                    println!("{name}/");
                } else {
                    println!("{name}");
                }
            }
        }
        DataCommand::Stat { path, json, .. } => {
            let (inode, attributes) = namespace.resolve(&path).await?;
            let layout = match attributes.kind {
                FileKind::File => layout_of(&namespace, inode, attributes.size_bytes).await?,
                _ => Layout::default(),
            };
            if json {
                println!("{}", attributes_json(&path, inode.0, &attributes, &layout));
            } else {
                println!(
                    "{path}: {} inode {} mode {:o} size {} links {} uid {} gid {} inline {} extents {} ({} bytes)",
                    kind_name(attributes.kind),
                    inode.0,
                    attributes.mode,
                    attributes.size_bytes,
                    attributes.nlink,
                    attributes.uid,
                    attributes.gid,
                    layout.inline_bytes,
                    layout.extents,
                    layout.extent_bytes
                );
            }
        }
        DataCommand::Mkdir { path, parents, .. } => {
            if parents {
                namespace.mkdir_all(&path, 0o755).await?;
            } else {
                namespace.mkdir(&path, 0o755).await?;
            }
        }
        DataCommand::Rm { path, .. } => namespace.remove(&path).await?,
        DataCommand::Mv { from, to, .. } => namespace.rename(&from, &to).await?,
    }
    Ok(())
}
