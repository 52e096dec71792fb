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

/// Lets every other task of this worker that is ready run once before the caller goes on (it
/// wakes itself and waits one turn of the run queue).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
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

/// A one-time event many tasks of one worker may wait for, coming and going (a worker starting
/// to drain, awaited by its accept loop and by every idle keep-alive connection). A waiter takes
/// a slot while it waits and gives it back when it stops; slots are reused, so once warm,
/// waiting allocates nothing.
#[derive(Debug, Default)]
pub struct Event {
    fired: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Event {
    /// Fires the event: every current and future waiter resolves.
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> =
            self.slots.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Whether the event fired.
    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the event fires (at once if it has).
    pub fn wait(&self) -> EventWait<'_> {
        EventWait { event: self, slot: None }
    }
}

/// The future returned by [`Event::wait`]; gives its slot back when dropped.
#[derive(Debug)]
pub struct EventWait<'a> {
    event: &'a Event,
    slot: Option<usize>,
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let event = self.event;
        if event.fired.get() {
            return Poll::Ready(());
        }
        let mut slots = event.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let i = match event.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.push(Some(cx.waker().clone()));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(slot) = self.event.slots.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.event.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn waiters_come_and_go_and_all_wake_once_it_fires() {
        let event = Event::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100 {
            let mut w = std::pin::pin!(event.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(event.slots.borrow().len(), 1, "a slot given back is reused");
        let mut a = Box::pin(event.wait());
        let mut b = Box::pin(event.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending() && b.as_mut().poll(&mut cx).is_pending());
        event.fire();
        assert!(a.as_mut().poll(&mut cx).is_ready() && b.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(event.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
