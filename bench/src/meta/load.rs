//! Drives a scope's operations through the metadata service from this process.
//!
//! `threads` client threads each run a kiseki-runtime executor with a `MetaClient` of
//! their own. Streams are spread round-robin over the threads; stream `k` of `n` owns a
//! `Session` and works on shard `shards[k % shards.len()]`, on files `k, k + n, k + 2n, ...`
//! (so `n` is a multiple of the shard count). All streams run at once, one operation in
//! flight each, which is what lets the shards' leaders batch (group commit). Phases are
//! separated by messages: each thread reports ready, and the calling thread starts the
//! next phase on all of them at once when every one is (or stops them all when one
//! failed); each phase is timed from its start to the last stream's end.
//!
//! Readdir: every directory is cut into `listers` consecutive cookie ranges (cookies are
//! a per-directory counter in creation order), each paged through by its own lister in
//! pages of `READDIR_ENTRIES_MAX`; the latency recorded is per page.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use kiseki_namespace::{Delta, InodeId, READDIR_COOKIE_FIRST};
use kiseki_runtime::ExecutorConfig;
use kiseki_shard_host::{DeltaOutcome, MetaClient, ReadAnswer, ReadQuery, Session, READDIR_ENTRIES_MAX};

use super::workload::{latency_histogram, record, Op, OpFigures, Workload, OPS};

/// How the load is generated.
#[derive(Debug, Clone)]
pub(crate) struct LoadShape {
    /// Concurrent streams (rounded up to a multiple of the shards in scope).
    pub streams: usize,
    /// Client threads (executors).
    pub threads: usize,
    /// Concurrent readdir listers over all directories (at least one per directory).
    pub listers: usize,
}

/// One stream: its number and the directory it works in.
#[derive(Debug, Clone, Copy)]
struct Stream {
    number: u64,
    position: usize,
}

/// One readdir lister: entries of a directory with cookies in `(after, last]`.
#[derive(Debug, Clone, Copy)]
struct Lister {
    position: usize,
    after: u64,
    last: u64,
}

/// What one client thread does.
struct ThreadPlan {
    seed: SocketAddr,
    workload: Arc<Workload>,
    directories: Arc<Vec<InodeId>>,
    stream_count: u64,
    streams: Vec<Stream>,
    listers: Vec<Lister>,
}

/// Runs every operation of `workload` against the cluster at `seed`; figures in [`OPS`]
/// order.
pub(crate) fn run(seed: SocketAddr, workload: &Workload, shape: &LoadShape) -> anyhow::Result<Vec<OpFigures>> {
    let directories = Arc::new(make_directories(seed, workload)?);
    let shard_count = workload.shards.len();
    let stream_count = shape.streams.max(1).div_ceil(shard_count) * shard_count;
    let threads = shape.threads.clamp(1, stream_count);
    let shared = Arc::new(workload.clone());
    let mut plans: Vec<ThreadPlan> = (0..threads)
        .map(|_| ThreadPlan {
            seed,
            workload: Arc::clone(&shared),
            directories: Arc::clone(&directories),
            stream_count: stream_count as u64,
            streams: Vec::new(),
            listers: Vec::new(),
        })
        .collect();
    for number in 0..stream_count {
        plans[number % threads].streams.push(Stream {
            number: number as u64,
            position: number % shard_count,
        });
    }
    for (index, lister) in listers(workload, shape.listers).into_iter().enumerate() {
        plans[index % threads].listers.push(lister);
    }
    let (step_sender, steps) = mpsc::channel::<Step>();
    let mut starts = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for (thread, plan) in plans.into_iter().enumerate() {
        let (start, start_receiver) = mpsc::channel::<bool>();
        starts.push(start);
        let phases = Phases {
            steps: step_sender.clone(),
            starts: start_receiver,
        };
        let handle = std::thread::Builder::new()
            .name(format!("bench-meta-client-{thread}"))
            .spawn(move || {
                let failed = phases.steps.clone();
                let result = client_thread(thread, plan, phases);
                if result.is_err() {
                    let _ = failed.send(Step::Failed);
                }
                result
            });
        match handle {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                stop_all(&starts);
                return Err(error).context("starting client threads");
            }
        }
    }
    drop(step_sender);
    coordinate(&steps, &starts);
    let mut merged: Vec<OpFigures> = OPS.iter().map(|_| OpFigures::new()).collect();
    let mut first_error = None;
    let mut stopped_only = false;
    for handle in handles {
        match handle.join() {
            Ok(Ok(figures)) => {
                for (total, thread) in merged.iter_mut().zip(&figures) {
                    total.merge_parallel(thread);
                }
            }
            // The thread that failed first says why; the others only that they stopped.
            Ok(Err(error)) if error.is::<Stopped>() => stopped_only = true,
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow!("a client thread panicked"));
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None if stopped_only => Err(anyhow!(Stopped)),
        None => Ok(merged),
    }
}

/// Makes the benchmark directory in every shard in scope; their inodes by position.
fn make_directories(seed: SocketAddr, workload: &Workload) -> anyhow::Result<Vec<InodeId>> {
    let shards = workload.shards.clone();
    kiseki_runtime::block_on(ExecutorConfig::default(), 0, async move {
        let client = MetaClient::connect(seed).await.context("connecting to the cluster")?;
        let session = client.session();
        let mut directories = Vec::with_capacity(shards.len());
        for shard in shards {
            let outcome = propose(&client, &session, shard, &Workload::mkdir()).await?;
            let DeltaOutcome::Done { inode: Some(inode), .. } = outcome else {
                bail!("mkdir on shard {shard}: {outcome:?}");
            };
            directories.push(inode);
        }
        Ok(directories)
    })?
}

/// The readdir listers: `total` spread over the directories, at least one each.
fn listers(workload: &Workload, total: usize) -> Vec<Lister> {
    let directories = workload.shards.len();
    let per_directory = (total / directories).max(1) as u64;
    let mut listers = Vec::new();
    for position in 0..directories {
        let entries = workload.files_at(position);
        let first = READDIR_COOKIE_FIRST - 1;
        for part in 0..per_directory {
            let after = first + part * entries / per_directory;
            let last = if part + 1 == per_directory {
                u64::MAX
            } else {
                first + (part + 1) * entries / per_directory
            };
            listers.push(Lister { position, after, last });
        }
    }
    listers
}

fn client_thread(thread: usize, plan: ThreadPlan, phases: Phases) -> anyhow::Result<Vec<OpFigures>> {
    let plan = Rc::new(plan);
    let work = async move {
        let client = Rc::new(
            MetaClient::connect(plan.seed)
                .await
                .context("connecting to the cluster")?,
        );
        let sessions: Vec<Rc<Session>> = plan.streams.iter().map(|_| Rc::new(client.session())).collect();
        let mut figures = Vec::with_capacity(OPS.len());
        for op in OPS {
            // Every stream of this thread has finished the previous phase here, so
            // blocking the executor until the other threads are ready stalls nothing.
            phases.ready()?;
            figures.push(run_phase(&client, &plan, &sessions, op).await?);
        }
        Ok::<_, anyhow::Error>(figures)
    };
    kiseki_runtime::block_on(ExecutorConfig::default(), thread, work)?
}

async fn run_phase(
    client: &Rc<MetaClient>,
    plan: &Rc<ThreadPlan>,
    sessions: &[Rc<Session>],
    op: Op,
) -> anyhow::Result<OpFigures> {
    let latency = Rc::new(RefCell::new(latency_histogram()));
    let started = Instant::now();
    let mut handles = Vec::new();
    if op == Op::Readdir {
        for lister in plan.listers.clone() {
            let (client, plan, latency) = (Rc::clone(client), Rc::clone(plan), Rc::clone(&latency));
            handles.push(kiseki_runtime::spawn("bench-lister", async move {
                list(&client, &plan, lister, &latency).await
            })?);
        }
    } else {
        for (stream, session) in plan.streams.iter().zip(sessions) {
            let (client, plan, latency) = (Rc::clone(client), Rc::clone(plan), Rc::clone(&latency));
            let (stream, session) = (*stream, Rc::clone(session));
            handles.push(kiseki_runtime::spawn("bench-stream", async move {
                run_stream(&client, &plan, stream, &session, op, &latency).await
            })?);
        }
    }
    let mut count = 0;
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok(done) => count += done,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let latency_ns = latency.borrow().clone();
    Ok(OpFigures {
        count,
        elapsed: started.elapsed(),
        latency_ns,
    })
}

/// Runs `op` on every file of `stream`, one at a time; returns how many.
async fn run_stream(
    client: &MetaClient,
    plan: &ThreadPlan,
    stream: Stream,
    session: &Session,
    op: Op,
    latency: &RefCell<Histogram<u64>>,
) -> anyhow::Result<u64> {
    let workload = &plan.workload;
    let shard = workload.shards[stream.position];
    let directory = plan.directories[stream.position];
    let mut done = 0;
    let mut index = stream.number;
    while index < workload.count(op) {
        let begun = Instant::now();
        match op {
            Op::Create => {
                propose(client, session, shard, &Workload::create(directory, index)).await?;
            }
            Op::Rename => {
                propose(client, session, shard, &Workload::rename(shard, directory, index)).await?;
            }
            Op::Unlink => {
                propose(client, session, shard, &Workload::unlink(directory, index)).await?;
            }
            Op::Stat | Op::Readdir => {
                let query = ReadQuery::Lookup {
                    parent: directory,
                    name: Workload::name(index),
                };
                let (_, answer) = client.read(shard, &query).await?;
                if !matches!(answer, ReadAnswer::Entry { .. }) {
                    bail!("lookup of file {index} on shard {shard}: {answer:?}");
                }
            }
        }
        record(&mut latency.borrow_mut(), begun.elapsed());
        done += 1;
        index += plan.stream_count;
    }
    Ok(done)
}

/// Pages through one lister's cookie range; returns the entries seen.
async fn list(
    client: &MetaClient,
    plan: &ThreadPlan,
    lister: Lister,
    latency: &RefCell<Histogram<u64>>,
) -> anyhow::Result<u64> {
    let shard = plan.workload.shards[lister.position];
    let directory = plan.directories[lister.position];
    let mut after = lister.after;
    let mut entries = 0;
    while after < lister.last {
        let limit = (lister.last - after).min(u64::from(READDIR_ENTRIES_MAX)) as u32;
        let query = ReadQuery::ReadDir {
            dir: directory,
            after_cookie: after,
            limit,
        };
        let begun = Instant::now();
        let (_, answer) = client.read(shard, &query).await?;
        record(&mut latency.borrow_mut(), begun.elapsed());
        let ReadAnswer::Entries(page) = answer else {
            bail!("readdir of shard {shard}: {answer:?}");
        };
        let Some(last) = page.last() else { break };
        after = last.cookie;
        entries += page.iter().filter(|entry| entry.cookie <= lister.last).count() as u64;
    }
    Ok(entries)
}

/// Proposes `delta`; a refusal is an error.
async fn propose(client: &MetaClient, session: &Session, shard: u64, delta: &Delta) -> anyhow::Result<DeltaOutcome> {
    let (_, outcome) = client
        .propose(session, shard, delta)
        .await
        .with_context(|| format!("proposing on shard {shard}"))?;
    if let DeltaOutcome::Refused(error) = &outcome {
        bail!("shard {shard} refused {delta:?}: {error}");
    }
    Ok(outcome)
}

/// Why a client thread stopped without failing itself: another one failed.
#[derive(Debug, Clone, Copy)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("stopped: another client thread failed")
    }
}

impl std::error::Error for Stopped {}

/// What a client thread tells the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Ready for the next phase.
    Ready,
    /// Failed; the others should stop.
    Failed,
}

/// A client thread's end of the phase messages.
struct Phases {
    steps: mpsc::Sender<Step>,
    starts: mpsc::Receiver<bool>,
}

impl Phases {
    /// Reports ready and waits for the start of the next phase; fails if the run stops.
    fn ready(&self) -> anyhow::Result<()> {
        self.steps.send(Step::Ready).map_err(|_| anyhow!(Stopped))?;
        match self.starts.recv() {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(anyhow!(Stopped)),
        }
    }
}

/// Starts each phase on every thread once all are ready; stops them all when one fails.
fn coordinate(steps: &mpsc::Receiver<Step>, starts: &[mpsc::Sender<bool>]) {
    for _ in OPS {
        let mut ready = 0;
        while ready < starts.len() {
            match steps.recv() {
                Ok(Step::Ready) => ready += 1,
                Ok(Step::Failed) | Err(_) => {
                    stop_all(starts);
                    return;
                }
            }
        }
        for start in starts {
            let _ = start.send(true);
        }
    }
}

fn stop_all(starts: &[mpsc::Sender<bool>]) {
    for start in starts {
        let _ = start.send(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listers_cover_every_cookie_once() {
        let workload = Workload {
            files: 10_001,
            ops: 0,
            shards: vec![1, 2],
        };
        let listers = listers(&workload, 8);
        assert_eq!(listers.len(), 8);
        for position in 0..2 {
            let ranges: Vec<&Lister> = listers.iter().filter(|lister| lister.position == position).collect();
            assert_eq!(ranges[0].after, READDIR_COOKIE_FIRST - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].last, pair[1].after);
            }
            assert_eq!(ranges.last().map(|lister| lister.last), Some(u64::MAX));
        }
        assert_eq!(super::listers(&workload, 1).len(), 2);
    }

    #[test]
    fn a_failed_thread_stops_the_others() {
        let (step_sender, steps) = mpsc::channel();
        let (start, starts) = mpsc::channel();
        let phases = Phases {
            steps: step_sender.clone(),
            starts,
        };
        let waiter = std::thread::spawn(move || phases.ready());
        step_sender.send(Step::Failed).expect("send");
        coordinate(&steps, &[start]);
        assert!(waiter.join().expect("waiter").is_err());
    }

    #[test]
    fn phases_start_when_every_thread_is_ready() {
        let (step_sender, steps) = mpsc::channel();
        let mut starts = Vec::new();
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let (start, receiver) = mpsc::channel();
            starts.push(start);
            let phases = Phases {
                steps: step_sender.clone(),
                starts: receiver,
            };
            waiters.push(std::thread::spawn(move || {
                (0..OPS.len()).all(|_| phases.ready().is_ok())
            }));
        }
        drop(step_sender);
        coordinate(&steps, &starts);
        assert!(waiters.into_iter().all(|waiter| waiter.join().expect("waiter")));
    }
}
