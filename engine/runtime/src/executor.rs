//! The per-core executor: a task queue, an io_uring ring, timers and a stall detector.
//!
//! One executor runs on one thread, pinned to one CPU. Tasks are `!Send` futures stored
//! in a slab owned by the core. Wakers are the only thing that crosses threads: waking a
//! task pushes its key on the core's bounded lock-free wake queue (each task is queued at
//! most once, so the queue never holds more than `tasks_max` keys) and, if the core is
//! parked in the kernel, writes its eventfd. Everything else is core-local.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use io_uring::{opcode, squeue, types, IoUring};

use crate::dma::{DmaArena, DmaBuf};
use crate::RuntimeError;

/// Start-up sizes of one core's executor. Every limit is fixed here.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Submission queue entries of the ring (the completion queue is twice this).
    pub ring_entries: u32,
    /// Bytes of registered DMA memory per core.
    pub dma_arena_bytes: usize,
    /// Live tasks at most; `spawn` answers `Busy` beyond it.
    pub tasks_max: usize,
    /// Files registered with the ring at most.
    pub registered_files_max: u32,
    /// A task poll longer than this is reported by the stall detector.
    pub stall_threshold_ms: u64,
    /// Polls between two non-blocking reaps of completions (fairness between tasks and I/O).
    pub polls_per_reap: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            ring_entries: 512,
            dma_arena_bytes: 64 << 20,
            tasks_max: 16_384,
            registered_files_max: 64,
            stall_threshold_ms: 10,
            polls_per_reap: 32,
        }
    }
}

/// Counters of one executor, read by the owning core for metrics.
#[derive(Debug, Default, Clone)]
pub struct ExecutorStats {
    /// Task polls run.
    pub polls: u64,
    /// Polls that exceeded the stall threshold.
    pub stalls: u64,
    /// Longest poll seen, in microseconds.
    pub longest_poll_us: u64,
    /// io_uring operations submitted.
    pub ops_submitted: u64,
    /// Times the core parked in the kernel waiting for work.
    pub parks: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
}

const EVENTFD_USER_DATA: u64 = u64::MAX;
/// Completions of `AsyncCancel` requests carry this; they wake nobody.
const CANCEL_USER_DATA: u64 = u64::MAX - 1;
/// The low 32 bits of an op's user data are its slot; the high bits a submission count,
/// so a late cancel can never hit a newer op that reuses the slot.
const SLOT_MASK: u64 = 0xffff_ffff;

/// Task key: slab index in the low 32 bits, generation in the high 32 bits.
type TaskKey = u64;

struct WakeShared {
    queue: ArrayQueue<TaskKey>,
    parked: AtomicBool,
    eventfd: OwnedFd,
    remote_wakes: AtomicU64,
}

impl WakeShared {
    fn push(&self, key: TaskKey) {
        // Each live task is queued at most once and dead tasks never again (their header
        // stays `queued`), so the queue cannot overflow.
        let pushed = self.queue.push(key);
        assert!(pushed.is_ok(), "wake queue overflow: more queued tasks than tasks_max");
        if self.parked.load(Ordering::SeqCst) {
            self.remote_wakes.fetch_add(1, Ordering::Relaxed);
            // Best effort: if the write fails the core still wakes at its next timer.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

struct TaskHeader {
    key: TaskKey,
    queued: AtomicBool,
    shared: Arc<WakeShared>,
}

impl Wake for TaskHeader {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.push(self.key);
        }
    }
}

struct TaskSlot {
    generation: u32,
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    header: Option<Arc<TaskHeader>>,
    waker: Option<Waker>,
    name: &'static str,
}

/// Memory an operation owns until the kernel is done with it.
pub(crate) enum OpBuffer {
    /// A DMA buffer (file and device I/O).
    Dma(DmaBuf),
    /// Plain heap bytes (socket I/O, socket addresses).
    Bytes(Vec<u8>),
    /// No memory; the op's result is a new descriptor (accept), closed if nobody takes it.
    ResultFd,
}

enum OpState {
    Pending {
        waker: Option<Waker>,
        buffer: Option<OpBuffer>,
        user_data: u64,
    },
    Done {
        result: i32,
        buffer: Option<OpBuffer>,
    },
    /// The future was dropped; the buffer must live until the kernel is done with it.
    Abandoned {
        _buffer: Option<OpBuffer>,
    },
}

struct Timers {
    next_sequence: u64,
    deadlines: BTreeMap<(Instant, u64), Waker>,
}

/// One core's executor state. Reached through [`crate::current`] on its own thread only.
pub(crate) struct Executor {
    pub(crate) core_index: usize,
    config: ExecutorConfig,
    ring: RefCell<IoUring>,
    tasks: RefCell<Vec<TaskSlot>>,
    free_task_slots: RefCell<Vec<u32>>,
    live_tasks: Cell<usize>,
    shared: Arc<WakeShared>,
    ops: RefCell<Vec<Option<OpState>>>,
    free_op_slots: RefCell<Vec<u32>>,
    unsubmitted: Cell<u32>,
    timers: RefCell<Timers>,
    pub(crate) arena: Rc<DmaArena>,
    eventfd_buffer: RefCell<Box<[u8; 8]>>,
    eventfd_armed: Cell<bool>,
    stats: RefCell<ExecutorStats>,
    registered_files: RefCell<Vec<bool>>,
    stopping: Cell<bool>,
    local_ready: RefCell<VecDeque<TaskKey>>,
}

impl Executor {
    pub(crate) fn new(core_index: usize, config: ExecutorConfig) -> Result<Executor, RuntimeError> {
        let ring = IoUring::builder()
            .setup_cqsize(config.ring_entries * 2)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(config.ring_entries)
            .map_err(|source| RuntimeError::Setup {
                what: "io_uring ring",
                source,
            })?;
        let arena = Rc::new(DmaArena::new(config.dma_arena_bytes));
        let iovec = arena.iovec();
        // SAFETY: the arena outlives the ring's use of it: the executor unregisters (by
        // dropping the ring) before the arena is freed, and `Executor` drops `ring` first.
        unsafe { ring.submitter().register_buffers(&[iovec]) }.map_err(|source| RuntimeError::Setup {
            what: "registered DMA buffers (raise RLIMIT_MEMLOCK?)",
            source,
        })?;
        ring.submitter()
            .register_files_sparse(config.registered_files_max)
            .map_err(|source| RuntimeError::Setup {
                what: "registered file table",
                source,
            })?;
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|errno| RuntimeError::Setup {
            what: "eventfd",
            source: errno.into(),
        })?;
        let shared = Arc::new(WakeShared {
            // A live task is queued at most once; a task that woke itself and then finished
            // leaves one stale key: twice `tasks_max` always holds both.
            queue: ArrayQueue::new(2 * config.tasks_max.max(1)),
            parked: AtomicBool::new(false),
            eventfd,
            remote_wakes: AtomicU64::new(0),
        });
        let registered_files = vec![false; config.registered_files_max as usize];
        Ok(Executor {
            core_index,
            config,
            ring: RefCell::new(ring),
            tasks: RefCell::new(Vec::new()),
            free_task_slots: RefCell::new(Vec::new()),
            live_tasks: Cell::new(0),
            shared,
            ops: RefCell::new(Vec::new()),
            free_op_slots: RefCell::new(Vec::new()),
            unsubmitted: Cell::new(0),
            timers: RefCell::new(Timers {
                next_sequence: 0,
                deadlines: BTreeMap::new(),
            }),
            arena,
            eventfd_buffer: RefCell::new(Box::new([0u8; 8])),
            eventfd_armed: Cell::new(false),
            stats: RefCell::new(ExecutorStats::default()),
            registered_files: RefCell::new(registered_files),
            stopping: Cell::new(false),
            local_ready: RefCell::new(VecDeque::new()),
        })
    }

    pub(crate) fn stats(&self) -> ExecutorStats {
        self.stats.borrow().clone()
    }

    pub(crate) fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    // ----- tasks -------------------------------------------------------------------

    pub(crate) fn spawn(
        &self,
        name: &'static str,
        future: Pin<Box<dyn Future<Output = ()>>>,
    ) -> Result<(), RuntimeError> {
        if self.live_tasks.get() >= self.config.tasks_max {
            return Err(RuntimeError::Busy {
                what: "tasks",
                limit: self.config.tasks_max,
            });
        }
        let mut tasks = self.tasks.borrow_mut();
        let index = match self.free_task_slots.borrow_mut().pop() {
            Some(index) => index,
            None => {
                tasks.push(TaskSlot {
                    generation: 0,
                    future: None,
                    header: None,
                    waker: None,
                    name,
                });
                (tasks.len() - 1) as u32
            }
        };
        let slot = &mut tasks[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let key = (u64::from(slot.generation) << 32) | u64::from(index);
        let header = Arc::new(TaskHeader {
            key,
            queued: AtomicBool::new(true),
            shared: Arc::clone(&self.shared),
        });
        slot.waker = Some(Waker::from(Arc::clone(&header)));
        slot.header = Some(header);
        slot.future = Some(future);
        slot.name = name;
        self.live_tasks.set(self.live_tasks.get() + 1);
        self.stats.borrow_mut().tasks_spawned += 1;
        self.local_ready.borrow_mut().push_back(key);
        Ok(())
    }

    /// Polls one task; `poll_started` is when this poll began (the end of the previous
    /// one), and the returned instant is when it ended: one clock read per poll.
    fn poll_task(&self, key: TaskKey, poll_started: Instant) -> Instant {
        let index = (key & 0xffff_ffff) as usize;
        let generation = (key >> 32) as u32;
        let (mut future, waker, header, name) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(index) else {
                return poll_started;
            };
            if slot.generation != generation {
                return poll_started;
            }
            let Some(future) = slot.future.take() else {
                return poll_started;
            };
            let (Some(waker), Some(header)) = (slot.waker.clone(), slot.header.clone()) else {
                return poll_started;
            };
            (future, waker, header, slot.name)
        };
        header.queued.store(false, Ordering::Release);
        let mut context = Context::from_waker(&waker);
        let poll = future.as_mut().poll(&mut context);
        let poll_ended = Instant::now();
        let elapsed = poll_ended - poll_started;
        {
            let mut stats = self.stats.borrow_mut();
            stats.polls += 1;
            let elapsed_us = elapsed.as_micros() as u64;
            stats.longest_poll_us = stats.longest_poll_us.max(elapsed_us);
            if elapsed > Duration::from_millis(self.config.stall_threshold_ms) {
                stats.stalls += 1;
                tracing::warn!(
                    core = self.core_index,
                    task = name,
                    held_ms = elapsed.as_secs_f64() * 1000.0,
                    "stall: a task held the core beyond the stall threshold"
                );
            }
        }
        let mut tasks = self.tasks.borrow_mut();
        let slot = &mut tasks[index];
        match poll {
            Poll::Pending => slot.future = Some(future),
            Poll::Ready(()) => {
                // A dead task's header stays queued so stale wakers never push it again.
                header.queued.store(true, Ordering::Release);
                slot.header = None;
                slot.waker = None;
                drop(tasks);
                drop(future);
                self.free_task_slots.borrow_mut().push(index as u32);
                self.live_tasks.set(self.live_tasks.get() - 1);
            }
        }
        poll_ended
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.live_tasks.get()
    }

    // ----- I/O operations ----------------------------------------------------------

    /// Queues an SQE; the op's completion is delivered to slot `key`.
    ///
    /// # Safety
    /// Every buffer or pointer the entry refers to must stay valid until the completion
    /// for it is reaped. Buffers passed as `buffer` are kept alive by the op slot.
    pub(crate) unsafe fn submit_op(&self, entry: squeue::Entry, buffer: Option<OpBuffer>) -> u32 {
        let slot = match self.free_op_slots.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let mut ops = self.ops.borrow_mut();
                ops.push(None);
                (ops.len() - 1) as u32
            }
        };
        let submitted = {
            let mut stats = self.stats.borrow_mut();
            stats.ops_submitted += 1;
            stats.ops_submitted
        };
        // Never equal to the eventfd or cancel markers: the count is at most 2^31 - 1.
        let user_data = ((submitted & 0x7fff_ffff) << 32) | u64::from(slot);
        self.ops.borrow_mut()[slot as usize] = Some(OpState::Pending {
            waker: None,
            buffer,
            user_data,
        });
        let entry = entry.user_data(user_data);
        self.push_entry(&entry);
        slot
    }

    /// # Safety
    /// As `submit_op`.
    unsafe fn push_entry(&self, entry: &squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the caller guarantees the entry's memory outlives its completion.
            let pushed = unsafe { ring.submission().push(entry) };
            if pushed.is_ok() {
                break;
            }
            // Submission queue full: hand what we have to the kernel and retry.
            if let Err(error) = ring.submit() {
                if error.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(core = self.core_index, %error, "io_uring submit failed");
                }
                Self::reap_into(&mut ring, &self.ops, &self.free_op_slots, &self.eventfd_armed);
            }
        }
        self.unsubmitted.set(self.unsubmitted.get() + 1);
    }

    /// Polls op `slot`: ready with the result and the buffer once completed.
    pub(crate) fn poll_op(&self, slot: u32, context: &mut Context<'_>) -> Poll<(i32, Option<OpBuffer>)> {
        let mut ops = self.ops.borrow_mut();
        let state = ops[slot as usize].as_mut().expect("polled op slot is live");
        match state {
            OpState::Pending { waker, .. } => {
                *waker = Some(context.waker().clone());
                Poll::Pending
            }
            OpState::Done { .. } => {
                let Some(OpState::Done { result, buffer }) = ops[slot as usize].take() else {
                    unreachable!("matched Done above")
                };
                drop(ops);
                self.free_op_slots.borrow_mut().push(slot);
                Poll::Ready((result, buffer))
            }
            OpState::Abandoned { .. } => unreachable!("an abandoned op is never polled"),
        }
    }

    /// The op's future was dropped before completion. With `cancel`, the kernel is asked
    /// to end it early (sockets: a pending receive or accept may otherwise never finish).
    pub(crate) fn abandon_op(&self, slot: u32, cancel: bool) {
        let mut ops = self.ops.borrow_mut();
        match ops[slot as usize].take() {
            Some(OpState::Pending { buffer, user_data, .. }) => {
                ops[slot as usize] = Some(OpState::Abandoned { _buffer: buffer });
                drop(ops);
                if cancel {
                    let entry = opcode::AsyncCancel::new(user_data).build().user_data(CANCEL_USER_DATA);
                    // SAFETY: a cancel request refers to no memory.
                    unsafe { self.push_entry(&entry) };
                    // Submitted at once, so the kernel stops the op before anything else
                    // this core does (a connect to the listener, say) can complete it.
                    self.enter(false, None);
                }
            }
            Some(OpState::Done { .. }) | None => {
                drop(ops);
                self.free_op_slots.borrow_mut().push(slot);
            }
            Some(abandoned @ OpState::Abandoned { .. }) => ops[slot as usize] = Some(abandoned),
        }
    }

    fn reap_into(
        ring: &mut IoUring,
        ops: &RefCell<Vec<Option<OpState>>>,
        free_op_slots: &RefCell<Vec<u32>>,
        eventfd_armed: &Cell<bool>,
    ) -> usize {
        let mut reaped = 0;
        let mut ops = ops.borrow_mut();
        for completion in ring.completion() {
            reaped += 1;
            let user_data = completion.user_data();
            if user_data == EVENTFD_USER_DATA {
                eventfd_armed.set(false);
                continue;
            }
            if user_data == CANCEL_USER_DATA {
                continue;
            }
            let slot = (user_data & SLOT_MASK) as usize;
            match ops.get_mut(slot).and_then(Option::take) {
                Some(OpState::Pending { waker, buffer, .. }) => {
                    ops[slot] = Some(OpState::Done {
                        result: completion.result(),
                        buffer,
                    });
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                Some(OpState::Abandoned { _buffer: buffer }) => {
                    if matches!(buffer, Some(OpBuffer::ResultFd)) && completion.result() >= 0 {
                        // An accept that completed after its caller left: nobody owns the
                        // new connection, so it is closed rather than leaked.
                        // SAFETY: the kernel just returned this descriptor; nothing else has it.
                        drop(unsafe {
                            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(completion.result())
                        });
                    }
                    // The buffer is dropped here, now that the kernel is done with it.
                    free_op_slots.borrow_mut().push(slot as u32);
                }
                other => ops[slot] = other,
            }
        }
        reaped
    }

    fn reap(&self) -> usize {
        let mut ring = self.ring.borrow_mut();
        Self::reap_into(&mut ring, &self.ops, &self.free_op_slots, &self.eventfd_armed)
    }

    pub(crate) fn register_file(&self, fd: RawFd) -> Result<u32, RuntimeError> {
        let mut files = self.registered_files.borrow_mut();
        let Some(index) = files.iter().position(|used| !used) else {
            return Err(RuntimeError::Busy {
                what: "registered files",
                limit: self.config.registered_files_max as usize,
            });
        };
        self.ring
            .borrow()
            .submitter()
            .register_files_update(index as u32, &[fd])
            .map_err(|source| RuntimeError::Setup {
                what: "register file",
                source,
            })?;
        files[index] = true;
        Ok(index as u32)
    }

    pub(crate) fn unregister_file(&self, index: u32) {
        let mut files = self.registered_files.borrow_mut();
        if let Some(used) = files.get_mut(index as usize) {
            if *used {
                let _ = self.ring.borrow().submitter().register_files_update(index, &[-1]);
                *used = false;
            }
        }
    }

    // ----- timers ------------------------------------------------------------------

    pub(crate) fn add_timer(&self, deadline: Instant, waker: Waker) -> u64 {
        let mut timers = self.timers.borrow_mut();
        let sequence = timers.next_sequence;
        timers.next_sequence += 1;
        timers.deadlines.insert((deadline, sequence), waker);
        sequence
    }

    pub(crate) fn update_timer(&self, deadline: Instant, sequence: u64, waker: &Waker) {
        if let Some(existing) = self.timers.borrow_mut().deadlines.get_mut(&(deadline, sequence)) {
            if !existing.will_wake(waker) {
                *existing = waker.clone();
            }
        }
    }

    pub(crate) fn remove_timer(&self, deadline: Instant, sequence: u64) {
        self.timers.borrow_mut().deadlines.remove(&(deadline, sequence));
    }

    fn fire_timers(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let next = {
            let mut timers = self.timers.borrow_mut();
            while let Some(entry) = timers.deadlines.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                expired.push(entry.remove());
            }
            timers.deadlines.keys().next().map(|(deadline, _)| *deadline)
        };
        for waker in expired {
            waker.wake();
        }
        next
    }

    // ----- the loop ----------------------------------------------------------------

    fn arm_eventfd(&self) {
        if self.eventfd_armed.get() {
            return;
        }
        let pointer = self.eventfd_buffer.borrow_mut().as_mut_ptr();
        let entry = opcode::Read::new(types::Fd(self.shared.eventfd.as_raw_fd()), pointer, 8)
            .build()
            .user_data(EVENTFD_USER_DATA);
        // SAFETY: the 8-byte buffer is boxed inside the executor, which outlives the ring's
        // use of it (the ring is torn down with the executor).
        unsafe { self.push_entry(&entry) };
        self.eventfd_armed.set(true);
    }

    fn drain_wakes(&self, budget: usize) -> usize {
        let mut ran = 0;
        let mut poll_started = Instant::now();
        while ran < budget {
            let key = self
                .local_ready
                .borrow_mut()
                .pop_front()
                .or_else(|| self.shared.queue.pop());
            let Some(key) = key else { break };
            poll_started = self.poll_task(key, poll_started);
            ran += 1;
        }
        ran
    }

    pub(crate) fn request_stop(&self) {
        self.stopping.set(true);
    }

    /// Runs until `done()` is true.
    pub(crate) fn run_until(&self, done: &dyn Fn() -> bool) {
        loop {
            let ran = self.drain_wakes(self.config.polls_per_reap);
            let next_timer = self.fire_timers();
            if done() || self.stopping.get() {
                break;
            }
            let queued = !self.shared.queue.is_empty() || !self.local_ready.borrow().is_empty();
            if ran > 0 || queued {
                // More work is ready: hand our SQEs to the kernel without waiting, or
                // only look at the completion ring (no system call) if none are queued.
                if self.unsubmitted.get() > 0 {
                    self.enter(false, None);
                } else {
                    self.reap();
                }
                continue;
            }
            // Nothing ready: park in the kernel until a completion, a remote wake or the
            // next timer.
            self.arm_eventfd();
            self.shared.parked.store(true, Ordering::SeqCst);
            if !self.shared.queue.is_empty() {
                self.shared.parked.store(false, Ordering::SeqCst);
                continue;
            }
            self.stats.borrow_mut().parks += 1;
            self.enter(true, next_timer);
            // Not parked any more: wakes from our own reaping must not write the eventfd.
            self.shared.parked.store(false, Ordering::SeqCst);
            self.reap();
        }
        // In-flight ops are drained by `shutdown`, after the tasks that own them are
        // dropped: a socket receive would otherwise keep its task's op pending forever.
    }

    fn submit_and_reap(&self, wait: bool, deadline: Option<Instant>) {
        self.enter(wait, deadline);
        self.reap();
    }

    /// Submits queued SQEs; with `wait`, blocks for one completion or until `deadline`.
    fn enter(&self, wait: bool, deadline: Option<Instant>) {
        {
            let ring = self.ring.borrow();
            let submitter = ring.submitter();
            let result = if wait {
                match deadline {
                    Some(deadline) => {
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        let timespec = types::Timespec::from(timeout);
                        let args = types::SubmitArgs::new().timespec(&timespec);
                        submitter.submit_with_args(1, &args)
                    }
                    None => submitter.submit_and_wait(1),
                }
            } else {
                submitter.submit()
            };
            match result {
                Ok(_) => self.unsubmitted.set(0),
                Err(error) => match error.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                    _ => tracing::error!(core = self.core_index, %error, "io_uring enter failed"),
                },
            }
        }
    }

    /// Waits for every in-flight op so no buffer is freed under the kernel.
    fn drain_in_flight(&self) {
        if self.eventfd_armed.get() {
            // Completes the armed eventfd read so the drain can finish.
            let _ = rustix::io::write(&self.shared.eventfd, &1u64.to_ne_bytes());
        }
        loop {
            let pending = self
                .ops
                .borrow()
                .iter()
                .filter(|state| matches!(state, Some(OpState::Pending { .. }) | Some(OpState::Abandoned { .. })))
                .count();
            if pending == 0 && !self.eventfd_armed.get() {
                break;
            }
            self.submit_and_reap(true, Some(Instant::now() + Duration::from_millis(100)));
        }
    }
}

impl Executor {
    /// Drops every task (abandoning their ops) and waits for the kernel to finish with
    /// every buffer. Must run while this executor is still the thread's current one,
    /// since dropping an op future reaches it.
    pub(crate) fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for mut slot in tasks {
            if let Some(header) = slot.header.take() {
                header.queued.store(true, Ordering::Release);
            }
            drop(slot.future.take());
        }
        self.local_ready.borrow_mut().clear();
        while self.shared.queue.pop().is_some() {}
        self.live_tasks.set(0);
        self.drain_in_flight();
    }
}
