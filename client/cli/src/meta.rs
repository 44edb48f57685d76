//! `kiseki meta`: the metadata service as an operator and a script see it — the state of
//! every shard replica, and creates and lookups on a shard.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{bail, Context};
use clap::Subcommand;
use kiseki_namespace::{Delta, InodeId, NewAttributes, Timestamp};
use kiseki_net::{TcpTransport, TlsFiles, TlsTransport, Transport};
use kiseki_shard_host::{DeltaOutcome, MetaClient, ReadAnswer, ReadQuery};

/// Where and how to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOptions {
    /// Any core of any node (`host:port`).
    #[arg(long)]
    seed: SocketAddr,
    /// For a cluster with mutual TLS: the directory of `kiseki certs` (CA and client files).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The client certificate's name in `--tls-dir` (`NAME.pem`, `NAME.key`).
    #[arg(long, default_value = "client")]
    tls_name: String,
}

impl ConnectOptions {
    async fn client(&self) -> anyhow::Result<MetaClient> {
        let transport: Rc<dyn Transport> = match &self.tls_dir {
            Some(dir) => Rc::new(TlsTransport::from_files(&TlsFiles {
                ca_pem: dir.join(kiseki_net::tls::CA_CERTIFICATE_FILE),
                certificate_pem: dir.join(format!("{}.pem", self.tls_name)),
                key_pem: dir.join(format!("{}.key", self.tls_name)),
            })?),
            None => Rc::new(TcpTransport),
        };
        MetaClient::connect_with(self.seed, transport)
            .await
            .context("fetching the cluster map")
    }
}

/// `kiseki meta` subcommands.
#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Every shard replica of every node: leader, decided and applied index, digest.
    Status {
        #[command(flatten)]
        connect: ConnectOptions,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Creates files `PREFIX-NNNNNN` in a shard's root directory, one after another;
    /// prints `ok NAME` for each acknowledged create.
    Create {
        #[command(flatten)]
        connect: ConnectOptions,
        /// The shard.
        #[arg(long, default_value_t = 1)]
        shard: u64,
        /// Files to create.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// First number.
        #[arg(long, default_value_t = 0)]
        start: u32,
        /// Name prefix.
        #[arg(long, default_value = "file")]
        prefix: String,
    },
    /// Looks names up (linearizable reads); exits non-zero if one is missing.
    Lookup {
        #[command(flatten)]
        connect: ConnectOptions,
        /// The shard.
        #[arg(long, default_value_t = 1)]
        shard: u64,
        /// Names to look up in the shard's root directory.
        names: Vec<String>,
    },
}

/// Runs a `kiseki meta` subcommand on a one-core executor of this process.
pub fn run(command: MetaCommand) -> anyhow::Result<()> {
    kiseki_runtime::block_on(kiseki_runtime::ExecutorConfig::default(), 0, async move {
        match command {
            MetaCommand::Status { connect, json } => status(&connect.client().await?, json).await,
            MetaCommand::Create {
                connect,
                shard,
                count,
                start,
                prefix,
            } => {
                create(
                    &connect.client().await?,
                    shard,
                    start..start.saturating_add(count),
                    &prefix,
                )
                .await
            }
            MetaCommand::Lookup { connect, shard, names } => lookup(&connect.client().await?, shard, &names).await,
        }
    })
    .map_err(|error| anyhow::anyhow!("{error}"))?
}

async fn status(client: &MetaClient, json: bool) -> anyhow::Result<()> {
    // Written with `?`, so a closed pipe (`| head`) ends the command instead of panicking.
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>5} {:>4} {:>4} {:>6} {:>10} {:>10} {:>8}  digest",
            "shard", "node", "core", "leader", "decided", "applied", "inodes"
        )?;
    }
    for node in &client.map().nodes {
        for core in 0..usize::from(node.cores) {
            match client.status(node.id, core).await {
                Ok(reply) => {
                    for replica in &reply.replicas {
                        let digest: String = replica
                            .digest
                            .iter()
                            .take(8)
                            .map(|byte| format!("{byte:02x}"))
                            .collect();
                        if json {
                            writeln!(
                                out,
                                "{{\"shard\":{},\"node\":{},\"core\":{core},\"leader\":{},\"decided\":{},\
                                 \"applied\":{},\"inodes\":{},\"digest\":\"{digest}\"}}",
                                replica.shard,
                                node.id,
                                replica.leader,
                                replica.decided_index,
                                replica.applied_index,
                                replica.inodes
                            )?;
                        } else {
                            writeln!(
                                out,
                                "{:>5} {:>4} {core:>4} {:>6} {:>10} {:>10} {:>8}  {digest}",
                                replica.shard,
                                node.id,
                                replica.leader,
                                replica.decided_index,
                                replica.applied_index,
                                replica.inodes
                            )?;
                        }
                    }
                }
                Err(error) if json => writeln!(out, "{{\"node\":{},\"core\":{core},\"down\":\"{error}\"}}", node.id)?,
                Err(error) => writeln!(out, "node {} core {core}: down ({error})", node.id)?,
            }
        }
    }
    Ok(())
}

async fn create(client: &MetaClient, shard: u64, numbers: std::ops::Range<u32>, prefix: &str) -> anyhow::Result<()> {
    let session = client.session();
    let mut stdout = std::io::stdout();
    for number in numbers {
        let name = format!("{prefix}-{number:06}");
        let delta = Delta::Create {
            parent: InodeId(1),
            name: name.clone().into_bytes(),
            attributes: NewAttributes {
                mode: 0o644,
                uid: 0,
                gid: 0,
                time: now(),
            },
            exclusive: true,
        };
        let (_, outcome) = client
            .propose(&session, shard, &delta)
            .await
            .with_context(|| format!("creating {name}"))?;
        match outcome {
            DeltaOutcome::Done { .. } => {
                writeln!(stdout, "ok {name}")?;
                stdout.flush()?;
            }
            DeltaOutcome::Refused(error) => bail!("creating {name}: {error}"),
            other => bail!("creating {name}: unexpected outcome {other:?}"),
        }
    }
    Ok(())
}

async fn lookup(client: &MetaClient, shard: u64, names: &[String]) -> anyhow::Result<()> {
    let mut missing = 0;
    for name in names {
        let query = ReadQuery::Lookup {
            parent: InodeId(1),
            name: name.clone().into_bytes(),
        };
        match client.read(shard, &query).await? {
            (_, ReadAnswer::Entry { inode, .. }) => println!("{name} inode {}", inode.0),
            (_, answer) => {
                missing += 1;
                println!("{name} missing: {answer:?}");
            }
        }
    }
    if missing > 0 {
        bail!("{missing} of {} names missing", names.len());
    }
    Ok(())
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos())
}
