//! The keeper: the control plane's background care of the cluster's chunks, so that
//! redundancy comes back and space is reclaimed without an operator (design §4; decision
//! 0017). It drives the same client-side passes as `kiseki repair` and `kiseki gc`
//! (decision 0009): nodes hold fragments, shards hold the files that reference them, and
//! only a walk of both tells a missing fragment from an unreferenced one.
//!
//! - **Liveness.** Every `check_interval_ms`, the first core of every node is asked for
//!   its devices (a cheap answer from the stores' counters, unlike the status, which
//!   hashes every shard's state; each answer bounded by the check interval).
//! - **Repair.** A pass (inventory of every device, walk of every shard, rebuild of what
//!   is missing from the survivors) runs once every node answers after the keeper starts,
//!   again whenever a node that did not answer answers again (chunks written at the
//!   write quorum while it was down lack its fragments), and every `repair_interval_s`
//!   while every node answers. A pass never runs while a node is down: its chunks would
//!   only wait for it. A pass that cannot list or walk the cluster is tried again after
//!   12 checks, not at the next one.
//! - **GC.** A pass of `Client::collect_garbage` with `gc_grace_s` runs every
//!   `gc_interval_s` while every node answers, in a task of its own (its grace period
//!   sleeps between the two walks), never two at once. A fragment is deleted only if it
//!   was listed at the start of the pass and no file referenced its chunk in either walk
//!   (I-C2); the default grace (6 h) bounds how long a writer may hold written chunks
//!   uncommitted.
//!
//! 0 for `repair_interval_s` or `gc_interval_s` turns that pass off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiseki_client::{chunk_health, Client, ClientError};

/// When the keeper checks, repairs and collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperConfig {
    /// Time between two liveness checks of every node.
    pub check_interval_ms: u64,
    /// Time between two repair passes while every node answers; 0: no automatic repair.
    pub repair_interval_s: u64,
    /// Time between two GC passes while every node answers; 0: no automatic GC.
    pub gc_interval_s: u64,
    /// The GC's grace period: writers must commit a chunk within it of writing its
    /// fragments (see `kiseki gc --grace-s`). Far longer than the CLI's 60 s by default:
    /// the keeper runs unattended, while writers are running, and a single S3 PUT commits
    /// its chunks only once its whole body is in.
    pub gc_grace_s: u64,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        KeeperConfig {
            check_interval_ms: 5_000,
            repair_interval_s: 3_600,
            gc_interval_s: 86_400,
            gc_grace_s: 21_600,
        }
    }
}

/// What the keeper did, for the control plane's metrics endpoint.
#[derive(Debug, Default)]
pub struct KeeperCounters {
    /// Nodes that did not answer the last check.
    pub nodes_down: AtomicU64,
    /// Repair passes finished.
    pub repair_runs: AtomicU64,
    /// Repair passes that could not list or walk the cluster.
    pub repair_errors: AtomicU64,
    /// Chunks referenced, at the start of the last repair pass.
    pub chunks: AtomicU64,
    /// Chunks missing a fragment, at the start of the last repair pass.
    pub chunks_degraded: AtomicU64,
    /// Chunks missing more fragments than their code tolerates, at the start of the last
    /// repair pass.
    pub chunks_lost: AtomicU64,
    /// Chunks brought back to full redundancy.
    pub chunks_repaired: AtomicU64,
    /// Fragments rebuilt, written and read back.
    pub fragments_rebuilt: AtomicU64,
    /// Chunks whose repair failed.
    pub repair_failures: AtomicU64,
    /// GC passes finished.
    pub gc_runs: AtomicU64,
    /// GC passes that could not list or walk the cluster.
    pub gc_errors: AtomicU64,
    /// Unreferenced fragments deleted.
    pub gc_fragments_deleted: AtomicU64,
}

impl KeeperCounters {
    /// The counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 12] = [
            ("kiseki_control_nodes_down", "gauge", &self.nodes_down),
            ("kiseki_control_repair_runs_total", "counter", &self.repair_runs),
            ("kiseki_control_repair_errors_total", "counter", &self.repair_errors),
            ("kiseki_control_chunks", "gauge", &self.chunks),
            ("kiseki_control_chunks_degraded", "gauge", &self.chunks_degraded),
            ("kiseki_control_chunks_lost", "gauge", &self.chunks_lost),
            ("kiseki_control_chunks_repaired_total", "counter", &self.chunks_repaired),
            (
                "kiseki_control_fragments_rebuilt_total",
                "counter",
                &self.fragments_rebuilt,
            ),
            ("kiseki_control_repair_failures_total", "counter", &self.repair_failures),
            ("kiseki_control_gc_runs_total", "counter", &self.gc_runs),
            ("kiseki_control_gc_errors_total", "counter", &self.gc_errors),
            (
                "kiseki_control_gc_fragments_deleted_total",
                "counter",
                &self.gc_fragments_deleted,
            ),
        ];
        rows.iter()
            .map(|(name, kind, value)| format!("# TYPE {name} {kind}\n{name} {}\n", value.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Whether a repair pass is due, from what the checks saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RepairSchedule {
    /// When the last pass finished; `None` before the first.
    last: Option<Instant>,
    /// A node did not answer since the last pass.
    node_was_down: bool,
    /// After a pass that could not survey the cluster, none before this.
    retry_at: Option<Instant>,
}

/// Checks between a pass that could not survey the cluster and the next attempt, so a
/// shard that keeps failing its walk does not cost a listing of every device per check.
const FAILED_PASS_BACKOFF_CHECKS: u32 = 12;

impl RepairSchedule {
    fn due(&self, interval: Duration, now: Instant) -> bool {
        if self.retry_at.is_some_and(|retry_at| now < retry_at) {
            return false;
        }
        match self.last {
            None => true,
            Some(last) => self.node_was_down || now.duration_since(last) >= interval,
        }
    }
}

/// Runs the keeper until the runtime stops: liveness checks, repair and GC passes.
pub async fn keep(client: Client, config: KeeperConfig, counters: Arc<KeeperCounters>) {
    if config.repair_interval_s == 0 && config.gc_interval_s == 0 {
        return;
    }
    let check_interval = Duration::from_millis(config.check_interval_ms.max(100));
    let repair_interval = Duration::from_secs(config.repair_interval_s);
    let gc_interval = Duration::from_secs(config.gc_interval_s);
    let mut schedule = RepairSchedule {
        last: None,
        node_was_down: false,
        retry_at: None,
    };
    let mut gc_next = Instant::now() + gc_interval;
    let mut gc_task: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::time::sleep(check_interval).await;
        let down = nodes_down(&client, check_interval).await;
        counters.nodes_down.store(down, Ordering::Relaxed);
        if down > 0 {
            schedule.node_was_down = true;
            continue;
        }
        let now = Instant::now();
        if config.repair_interval_s > 0 && schedule.due(repair_interval, now) {
            match repair_pass(&client, &counters).await {
                Survey::Done => {
                    schedule = RepairSchedule {
                        last: Some(Instant::now()),
                        node_was_down: false,
                        retry_at: None,
                    };
                }
                Survey::NodeDown => schedule.node_was_down = true,
                Survey::Failed => {
                    schedule.retry_at = Some(Instant::now() + check_interval * FAILED_PASS_BACKOFF_CHECKS)
                }
            }
        }
        let gc_idle = gc_task.as_ref().is_none_or(|task| task.is_finished());
        if config.gc_interval_s > 0 && gc_idle && Instant::now() >= gc_next {
            gc_next = Instant::now() + gc_interval;
            let (client, counters) = (client.clone(), Arc::clone(&counters));
            let grace = Duration::from_secs(config.gc_grace_s);
            gc_task = Some(tokio::spawn(async move { gc_pass(&client, grace, &counters).await }));
        }
    }
}

/// Nodes whose first core does not list its devices within `within`.
async fn nodes_down(client: &Client, within: Duration) -> u64 {
    let nodes: Vec<u64> = client.map().nodes.iter().map(|node| node.id).collect();
    let mut down = 0;
    for node in nodes {
        let answered = matches!(tokio::time::timeout(within, client.devices(node, 0)).await, Ok(Ok(_)));
        if !answered {
            down += 1;
        }
    }
    down
}

/// How a repair pass went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Survey {
    /// It looked at the whole cluster and repaired what it could.
    Done,
    /// A node stopped answering between the check and the listing: the next check retries.
    NodeDown,
    /// Listing or walking failed: retried after a backoff.
    Failed,
}

/// One repair pass.
async fn repair_pass(client: &Client, counters: &KeeperCounters) -> Survey {
    let surveyed = async {
        let inventory = client.fragment_inventory().await?;
        let records = client.chunk_records_of(None).await?;
        Ok::<_, ClientError>((inventory, records))
    };
    let (inventory, records) = match surveyed.await {
        Ok(surveyed) => surveyed,
        Err(error) => {
            counters.repair_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "keeper: cannot survey the cluster for repair");
            return Survey::Failed;
        }
    };
    if !inventory.down.is_empty() {
        return Survey::NodeDown;
    }
    let health = chunk_health(client.pool(), &records, &inventory);
    counters.chunks.store(health.chunks, Ordering::Relaxed);
    counters.chunks_degraded.store(health.degraded, Ordering::Relaxed);
    counters.chunks_lost.store(health.lost, Ordering::Relaxed);
    let summary = client.repair(records, &inventory, false).await;
    counters.repair_runs.fetch_add(1, Ordering::Relaxed);
    counters
        .chunks_repaired
        .fetch_add(summary.chunks_repaired, Ordering::Relaxed);
    counters
        .fragments_rebuilt
        .fetch_add(summary.fragments_rebuilt, Ordering::Relaxed);
    counters
        .repair_failures
        .fetch_add(summary.failed.len() as u64, Ordering::Relaxed);
    if health.degraded > 0 || !summary.failed.is_empty() {
        tracing::info!(
            chunks = health.chunks,
            degraded = health.degraded,
            lost = health.lost,
            repaired = summary.chunks_repaired,
            rebuilt = summary.fragments_rebuilt,
            waiting = summary.chunks_waiting,
            failed = summary.failed.len(),
            "keeper: repair pass"
        );
    }
    for failure in &summary.failed {
        tracing::warn!(%failure, "keeper: a chunk could not be repaired");
    }
    Survey::Done
}

/// One GC pass.
async fn gc_pass(client: &Client, grace: Duration, counters: &KeeperCounters) {
    match client.collect_garbage(grace, false).await {
        Ok(summary) => {
            counters.gc_runs.fetch_add(1, Ordering::Relaxed);
            counters
                .gc_fragments_deleted
                .fetch_add(summary.fragments_deleted, Ordering::Relaxed);
            if summary.fragments_deleted > 0 || !summary.failed.is_empty() {
                tracing::info!(
                    listed = summary.fragments_listed,
                    deleted = summary.fragments_deleted,
                    failed = summary.failed.len(),
                    "keeper: GC pass"
                );
            }
        }
        Err(error) => {
            counters.gc_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "keeper: cannot survey the cluster for GC");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_is_due_first_after_a_node_returns_and_by_interval() {
        let start = Instant::now();
        let hour = Duration::from_secs(3_600);
        let fresh = RepairSchedule {
            last: None,
            node_was_down: false,
            retry_at: None,
        };
        assert!(fresh.due(hour, start), "the first pass runs at once");
        let swept = RepairSchedule {
            last: Some(start),
            node_was_down: false,
            retry_at: None,
        };
        assert!(!swept.due(hour, start + Duration::from_secs(10)));
        assert!(swept.due(hour, start + hour));
        let returned = RepairSchedule {
            node_was_down: true,
            ..swept
        };
        assert!(returned.due(hour, start + Duration::from_secs(10)), "a returning node");
        let failed = RepairSchedule {
            retry_at: Some(start + Duration::from_secs(60)),
            ..returned
        };
        assert!(!failed.due(hour, start + Duration::from_secs(10)), "backing off");
        assert!(failed.due(hour, start + Duration::from_secs(60)), "then again");
    }

    #[test]
    fn counters_render_as_prometheus_text() {
        let counters = KeeperCounters::default();
        counters.chunks_repaired.store(7, Ordering::Relaxed);
        let text = counters.metrics_text();
        assert!(text.contains("# TYPE kiseki_control_chunks_repaired_total counter\n"));
        assert!(text.contains("kiseki_control_chunks_repaired_total 7\n"));
        assert_eq!(text.lines().count(), 24);
    }
}
