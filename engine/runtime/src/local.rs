//! Core-local synchronization: a wake-up flag and a one-shot slot, both `!Send`.
//!
//! These coordinate tasks of one core only (a committer and the writers waiting on it,
//! for example); between cores use [`crate::mesh`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A wake-up flag: `notify` sets it and wakes every waiter; `notified().await` returns
/// at once if it is set (clearing it), so a notification is never lost between a check
/// and a wait.
#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify").field("flag", &self.flag.get()).finish()
    }
}

impl Notify {
    /// A cleared flag with no waiters.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn notify(&self) {
        self.flag.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Completes once the flag is set, clearing it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

/// Future of [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.notify.flag.replace(false) {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|waker| waker.will_wake(context.waker())) {
            waiters.push(context.waker().clone());
        }
        Poll::Pending
    }
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_dropped: bool,
}

/// Sending half of a core-local one-shot.
pub struct OneshotSender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// Receiving half: resolves to `Some(value)`, or `None` if the sender was dropped.
pub struct OneshotReceiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// A core-local one-shot channel.
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_dropped: false,
    }));
    (OneshotSender { slot: Rc::clone(&slot) }, OneshotReceiver { slot })
}

impl<T> OneshotSender<T> {
    /// Delivers the value and wakes the receiver.
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.sender_dropped = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.slot.borrow_mut();
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.sender_dropped {
            return Poll::Ready(None);
        }
        slot.waker = Some(context.waker().clone());
        Poll::Pending
    }
}
