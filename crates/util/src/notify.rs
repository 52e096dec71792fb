//! A single-threaded notification for tasks of one worker (`Rc`, never shared across threads).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A single-threaded notification: waiters registered before [`Notify::notify`] are woken.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every current waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.take() {
            w.wake();
        }
    }

    /// Resolves at the next [`notify`](Self::notify).
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }
}

/// The future returned by [`Notify::notified`].
///
/// It holds one place in the waiter list however often it is polled (a connection loop polls
/// it on every wake-up), and only refreshes its waker there when the task's changed.
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// This future's index in `waiters`. Valid while the generation is unchanged: the list is
    /// only appended to until `notify` takes it whole (and bumps the generation).
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.notify.generation.get() != this.generation {
            return Poll::Ready(());
        }
        let mut waiters = this.notify.waiters.borrow_mut();
        match this.slot.and_then(|i| waiters.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                this.slot = Some(waiters.len());
                waiters.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notified_registers_once_however_often_polled() {
        let notify = Notify::default();
        let mut fut = std::pin::pin!(notify.notified());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..5 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiters.borrow().len(), 1);
        notify.notify();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert!(notify.waiters.borrow().is_empty());
    }
}
