//! Timers on the core's executor: the ring's wait is bounded by the next deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::with_current;

/// A future that completes at a deadline.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    registration: Option<u64>,
}

/// Completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now() + duration,
        registration: None,
    }
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        registration: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(sequence) = self.registration.take() {
                let deadline = self.deadline;
                let _ = with_current(|executor| executor.remove_timer(deadline, sequence));
            }
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        match self.registration {
            Some(sequence) => {
                let _ = with_current(|executor| executor.update_timer(deadline, sequence, context.waker()));
            }
            None => {
                // Outside an executor a sleep can never fire; stay pending (a caller bug
                // that shows up as a hang in tests, never as corruption).
                if let Ok(sequence) = with_current(|executor| executor.add_timer(deadline, context.waker().clone())) {
                    self.registration = Some(sequence);
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(sequence) = self.registration.take() {
            let deadline = self.deadline;
            let _ = with_current(|executor| executor.remove_timer(deadline, sequence));
        }
    }
}

/// Runs `future`, giving up after `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timer = std::pin::pin!(sleep(duration));
    std::future::poll_fn(move |context| {
        if let Poll::Ready(output) = future.as_mut().poll(context) {
            return Poll::Ready(Some(output));
        }
        if timer.as_mut().poll(context).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
