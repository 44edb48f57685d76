//! Core-local synchronization: a wake-up signal and a one-shot slot, both `!Send`.
//!
//! These coordinate tasks of one core only (a committer and the writers waiting on it,
//! for example); between cores use [`crate::mesh`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A wake-up signal for tasks of one core. `notify` wakes every waiter; a `notified()`
/// future completes once a `notify` happens after its first poll, or at once if a
/// notification arrived while nobody waited (a stored permit). Waiters re-check their
/// condition in a loop, so a spurious completion is harmless and none is ever lost,
/// however many tasks wait.
#[derive(Default)]
pub struct Notify {
    permit: Cell<bool>,
    epoch: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("permit", &self.permit.get())
            .field("epoch", &self.epoch.get())
            .finish()
    }
}

impl Notify {
    /// No permit, no waiters.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Wakes every waiter (or stores a permit for the next one).
    pub fn notify(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        // The permit also covers a waiter that is about to poll for the first time.
        self.permit.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Completes at the next notification (or at once, taking a stored permit).
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            epoch_seen: None,
        }
    }
}

/// Future of [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
    epoch_seen: Option<u64>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let notify = self.notify;
        match self.epoch_seen {
            None => {
                if notify.permit.replace(false) {
                    return Poll::Ready(());
                }
                self.epoch_seen = Some(notify.epoch.get());
            }
            Some(epoch) if epoch != notify.epoch.get() => return Poll::Ready(()),
            Some(_) => {}
        }
        let mut waiters = notify.waiters.borrow_mut();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_waiter_sees_a_notification() {
        let notify = Notify::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut context = Context::from_waker(&waker);
        let mut first = Box::pin(notify.notified());
        let mut second = Box::pin(notify.notified());
        assert!(first.as_mut().poll(&mut context).is_pending());
        assert!(second.as_mut().poll(&mut context).is_pending());
        notify.notify();
        // Both complete, whichever is polled first.
        assert!(second.as_mut().poll(&mut context).is_ready());
        assert!(first.as_mut().poll(&mut context).is_ready());
        // No waiter: the notification is kept for the next one.
        notify.notify();
        assert!(Box::pin(notify.notified()).as_mut().poll(&mut context).is_ready());
        assert!(Box::pin(notify.notified()).as_mut().poll(&mut context).is_pending());
    }
}
