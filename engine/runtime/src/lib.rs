//! Kiseki's thread-per-core runtime: one pinned executor per core over io_uring.
//!
//! **What it owns.** Per core: a task queue of `!Send` futures, one io_uring ring with a
//! registered DMA arena ([`dma`]) and a registered file table, TCP sockets driven through
//! the same ring ([`net`]; a dropped receive or accept is cancelled in the kernel), timers,
//! a stall detector and executor counters. Across cores: nothing but bounded channels ([`mesh`]) and the
//! wake queue of each executor (a bounded lock-free queue of task keys plus an eventfd).
//!
//! **Invariants.**
//! - I-T1 (shared-nothing): a core's executor state is reached only from its own thread;
//!   the thread-local [`current`] handle is `!Send`, and so are [`dma::DmaBuf`] and the
//!   futures it runs. Other cores reach it only through wakers and [`mesh`] messages.
//! - A buffer handed to the kernel is owned by the operation until its completion is
//!   reaped, even if the future that issued it is dropped (asserted by construction:
//!   the op slot keeps the buffer; the executor drains in-flight ops before exiting).
//! - Every queue is bounded: tasks (`tasks_max`), the wake queue (≤ live tasks), the
//!   ring (`ring_entries`), registered files, mesh channels (their capacity).
//!
//! **Where it runs.** Everywhere on a storage node's data path: `kiseki-server` starts
//! one executor per core with [`start_cores`]; tests and benchmarks use [`block_on`] on
//! the calling thread.
//!
//! The choice of a thin executor of our own over the `io-uring` crate, instead of glommio
//! or monoio, is recorded in `docs/decisions/0001-per-core-runtime.md`.
#![warn(missing_docs)]
// io_uring submission, the registered DMA arena and buffer slices need `unsafe`; each
// block carries a `// SAFETY:` comment. No other crate of the engine uses it.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod dma;
mod executor;
pub mod io;
pub mod local;
pub mod mesh;
pub mod net;
pub mod time;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub use dma::{align_up, DmaBuf, DMA_ALIGN_BYTES};
pub use executor::{ExecutorConfig, ExecutorStats};
pub use io::{DmaFile, OpenMode};
pub use time::{sleep, sleep_until, timeout, Sleep};

use executor::Executor;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A bounded resource is full; retry later.
    #[error("busy: {what} at their limit of {limit}")]
    Busy {
        /// Which resource.
        what: &'static str,
        /// Its configured limit.
        limit: usize,
    },
    /// Setting up a kernel resource failed.
    #[error("cannot set up {what}: {source}")]
    Setup {
        /// Which resource.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Called outside of a Kiseki executor thread.
    #[error("not on a Kiseki executor thread")]
    NoExecutor,
    /// A core thread panicked or could not be started.
    #[error("core {core}: {message}")]
    Core {
        /// Index of the core.
        core: usize,
        /// What happened.
        message: String,
    },
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's executor.
pub(crate) fn with_current<R>(f: impl FnOnce(&Executor) -> R) -> Result<R, RuntimeError> {
    let executor = CURRENT.try_with(|current| current.borrow().clone()).ok().flatten();
    match executor {
        Some(executor) => Ok(f(&executor)),
        None => Err(RuntimeError::NoExecutor),
    }
}

/// Index of the core this thread runs, if it runs one.
pub fn current() -> Option<usize> {
    with_current(|executor| executor.core_index).ok()
}

/// Counters of this thread's executor.
pub fn stats() -> Result<ExecutorStats, RuntimeError> {
    with_current(|executor| executor.stats())
}

/// Bytes of the DMA arena of this core that are free, and its size.
pub fn dma_arena_usage() -> Result<(usize, usize), RuntimeError> {
    with_current(|executor| (executor.arena.free_bytes(), executor.arena.bytes()))
}

/// Allocates a DMA buffer of at least `bytes` from this core's registered arena (or the
/// heap, outside an executor or when the arena is exhausted).
pub fn dma_buffer(bytes: usize) -> DmaBuf {
    let arena = CURRENT.with(|current| current.borrow().as_ref().map(|executor| Rc::clone(&executor.arena)));
    DmaBuf::allocate(arena.as_ref(), bytes)
}

struct JoinState<T> {
    output: Option<T>,
    waiter: Option<Waker>,
}

/// Awaits the output of a spawned task.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.state.borrow().output.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        match state.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                state.waiter = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Spawns a task on this core. `Busy` when `tasks_max` tasks are alive.
pub fn spawn<F>(name: &'static str, future: F) -> Result<JoinHandle<F::Output>, RuntimeError>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState {
        output: None,
        waiter: None,
    }));
    let task_state = Rc::clone(&state);
    let task = async move {
        let output = future.await;
        let waiter = {
            let mut state = task_state.borrow_mut();
            state.output = Some(output);
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    };
    with_current(|executor| executor.spawn(name, Box::pin(task)))??;
    Ok(JoinHandle { state })
}

/// Yields to the other tasks of this core once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |context| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Runs `future` to completion on this thread as core `core_index`, with an executor of
/// its own. Tasks it spawned and did not await are dropped when it returns.
pub fn block_on<F>(config: ExecutorConfig, core_index: usize, future: F) -> Result<F::Output, RuntimeError>
where
    F: Future + 'static,
    F::Output: 'static,
{
    if current().is_some() {
        return Err(RuntimeError::Core {
            core: core_index,
            message: "block_on called from inside an executor".into(),
        });
    }
    let executor = Rc::new(Executor::new(core_index, config)?);
    CURRENT.with(|current| *current.borrow_mut() = Some(Rc::clone(&executor)));
    // Shuts the executor down and clears it from the thread even if a task panics.
    let _guard = CurrentGuard(Rc::clone(&executor));
    let result = spawn("main", future).map(|handle| {
        let state = Rc::clone(&handle.state);
        executor.run_until(&|| state.borrow().output.is_some());
        let output = state.borrow_mut().output.take();
        output
    });
    match result {
        Ok(Some(output)) => Ok(output),
        Ok(None) => Err(RuntimeError::Core {
            core: core_index,
            message: "executor stopped before its main task finished".into(),
        }),
        Err(error) => Err(error),
    }
}

struct CurrentGuard(Rc<Executor>);

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        self.0.shutdown();
        let _ = CURRENT.try_with(|current| current.borrow_mut().take());
    }
}

/// Live tasks on this core.
pub fn live_tasks() -> Result<usize, RuntimeError> {
    with_current(|executor| executor.live_tasks())
}

/// The configuration this core's executor was started with.
pub fn config() -> Result<ExecutorConfig, RuntimeError> {
    with_current(|executor| executor.config().clone())
}

/// Stops this core's executor loop after the current poll (used on fatal errors).
pub fn request_stop() -> Result<(), RuntimeError> {
    with_current(|executor| executor.request_stop())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), RuntimeError> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(|errno| RuntimeError::Setup {
        what: "CPU affinity",
        source: errno.into(),
    })
}

/// CPUs this process may run on, in order.
pub fn available_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1))
            .collect(),
    }
}

/// The threads of a set of pinned cores.
pub struct CoreSet {
    threads: Vec<std::thread::JoinHandle<Result<(), RuntimeError>>>,
}

impl CoreSet {
    /// Waits for every core to finish; the first error wins.
    pub fn join(self) -> Result<(), RuntimeError> {
        let mut first_error = None;
        for (core, thread) in self.threads.into_iter().enumerate() {
            let result = thread.join().unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
                    .unwrap_or_else(|| "panicked".into());
                Err(RuntimeError::Core { core, message })
            });
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts `cores` executors, core `i` pinned to `cpus[i % cpus.len()]` (unpinned when
/// `cpus` is empty), each running `make(i)` as its main task until it returns.
pub fn start_cores<M, F>(config: ExecutorConfig, cores: usize, cpus: &[usize], make: M) -> Result<CoreSet, RuntimeError>
where
    M: Fn(usize) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + 'static,
{
    let make = std::sync::Arc::new(make);
    let mut threads = Vec::with_capacity(cores);
    for core in 0..cores {
        let make = std::sync::Arc::clone(&make);
        let config = config.clone();
        let cpu = (!cpus.is_empty()).then(|| cpus[core % cpus.len()]);
        let thread = std::thread::Builder::new()
            .name(format!("kiseki-core-{core}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(error) = pin_current_thread(cpu) {
                        tracing::warn!(core, cpu, %error, "cannot pin core thread; running unpinned");
                    }
                }
                block_on(config, core, make(core))
            })
            .map_err(|error| RuntimeError::Core {
                core,
                message: format!("cannot start thread: {error}"),
            })?;
        threads.push(thread);
    }
    Ok(CoreSet { threads })
}
