//! When a worker's upkeep task (its ticker) must run next, shared with whatever on the worker
//! creates timed work for it. Single-threaded (`Rc`, one worker), like [`Notify`].
//!
//! The ticker sleeps until the earliest deadline it knows of, or forever when there is none, so
//! an idle worker is never woken by it. Code that creates work due at some time (a connection
//! pooled until its idle timeout, a latency sample that ages out, a cache entry that expires)
//! calls [`Deadline::need_by`]: a compare, and a wake-up of the ticker only when the work is
//! due before anything it planned for.

use std::cell::Cell;

use crate::notify::{Notified, Notify};

/// The upkeep deadline of one worker, in milliseconds on the process clock
/// ([`now_ms`](crate::now_ms)).
#[derive(Debug, Default)]
pub struct Deadline {
    at_ms: Cell<Option<u64>>,
    sooner: Notify,
}

impl Deadline {
    /// Something must be done by `at_ms`: wakes the ticker if it planned nothing that soon.
    #[inline]
    pub fn need_by(&self, at_ms: u64) {
        if self.at_ms.get().is_none_or(|planned| at_ms < planned) {
            self.at_ms.set(Some(at_ms));
            self.sooner.notify();
        }
    }

    /// The ticker's plan after a run: its next deadline (`None`: nothing is pending).
    pub fn plan(&self, at_ms: Option<u64>) {
        self.at_ms.set(at_ms);
    }

    /// The planned deadline.
    pub fn planned(&self) -> Option<u64> {
        self.at_ms.get()
    }

    /// Resolves when [`need_by`](Self::need_by) moves the deadline earlier after this call
    /// (the ticker creates it before it runs, so that no request is missed).
    pub fn sooner(&self) -> Notified<'_> {
        self.sooner.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn only_an_earlier_deadline_wakes_the_ticker() {
        let d = Deadline::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut sooner = std::pin::pin!(d.sooner());
        assert!(sooner.as_mut().poll(&mut cx).is_pending());
        d.need_by(100);
        assert_eq!(sooner.as_mut().poll(&mut cx), Poll::Ready(()), "nothing was planned");
        assert_eq!(d.planned(), Some(100));

        let mut sooner = std::pin::pin!(d.sooner());
        d.need_by(200);
        assert!(sooner.as_mut().poll(&mut cx).is_pending(), "later than planned");
        assert_eq!(d.planned(), Some(100));
        d.need_by(50);
        assert_eq!(sooner.as_mut().poll(&mut cx), Poll::Ready(()));

        d.plan(None);
        let mut sooner = std::pin::pin!(d.sooner());
        d.need_by(300);
        assert_eq!(sooner.as_mut().poll(&mut cx), Poll::Ready(()), "idle: any work wakes it");
    }
}
