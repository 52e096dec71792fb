//! [`Alarms`]: the deadlines of many concurrent waits (the streams of one HTTP/2 connection)
//! on one timer entry, driven by the task that owns them. Everything runs on one worker's
//! thread: the waits and [`Alarms::drive`] are polled by the same connection task.
//!
//! `monoio::time::timeout` makes a 640-byte timer entry for each wait (boxed, where the future
//! that holds it is kept small), registers it in the runtime's wheel when the wait does not end
//! at once and removes it when the wait ends: about a thousand instructions and an allocation
//! per proxied HTTP/2 request. An [`Alarm`] is a slot in a small table instead: it costs a
//! clock reading and a slot when it is first polled, and nothing at its end. One timer entry,
//! owned by [`Alarms::drive`], is armed at no later than the earliest deadline in the table.
//! Deadlines of later waits usually lie later, so the entry is seldom moved: when it fires, the
//! driver wakes every wait whose deadline has passed and arms the entry at the next deadline
//! still pending, if any. Waits that ended before their deadline leave it in place, so a busy
//! connection's entry fires about once per timeout period.
//!
//! Memory: one slot per wait in progress (the table keeps its largest size; the streams of a
//! connection are bounded by `http2.max_concurrent_streams`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::time::Instant;

/// How far ahead the driver's entry is set while no deadline is pending (it is reset first).
const FAR: Duration = Duration::from_secs(24 * 60 * 60);

/// A set of alarms sharing one timer entry. Cloning gives another handle to the same set.
#[derive(Debug, Clone, Default)]
pub struct Alarms(Rc<RefCell<Table>>);

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    /// Slots not in use.
    free: Vec<usize>,
    /// No pending deadline is earlier; `None` when none is pending.
    earliest: Option<Instant>,
    /// The driver's task, woken when a deadline earlier than `earliest` arrives.
    driver: Option<Waker>,
}

#[derive(Debug)]
struct Slot {
    due: Instant,
    state: State,
    waker: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Pending,
    Rang,
}

impl Table {
    fn insert(&mut self, due: Instant, waker: Waker) -> usize {
        let slot = Slot { due, state: State::Pending, waker: Some(waker) };
        let key = match self.free.pop() {
            Some(key) => {
                if let Some(s) = self.slots.get_mut(key) {
                    *s = slot;
                }
                key
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        if self.earliest.is_none_or(|earliest| due < earliest) {
            self.earliest = Some(due);
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
        key
    }

    /// Rings every pending alarm due by `now`; `earliest` becomes the next deadline left.
    fn ring(&mut self, now: Instant) {
        let mut earliest = None::<Instant>;
        for slot in self.slots.iter_mut().filter(|s| s.state == State::Pending) {
            if slot.due <= now {
                slot.state = State::Rang;
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            } else if earliest.is_none_or(|e| slot.due < e) {
                earliest = Some(slot.due);
            }
        }
        self.earliest = earliest;
    }
}

impl Alarms {
    /// An empty set. It rings only while [`Alarms::drive`] is polled.
    pub fn new() -> Self {
        Self::default()
    }

    /// An alarm that rings `limit` after it is first polled (the wait it bounds begins then).
    /// Dropped before that, it costs nothing.
    pub fn after(&self, limit: Duration) -> Alarm {
        Alarm { alarms: self.clone(), limit, key: None }
    }

    /// Rings the alarms as their deadlines pass. Never ends: poll it beside the waits, from
    /// their task, for as long as any of them may run.
    pub async fn drive(&self) {
        let mut sleep = pin!(monoio::time::sleep(FAR));
        std::future::poll_fn(|cx| self.poll_drive(sleep.as_mut(), cx)).await
    }

    fn poll_drive(
        &self,
        mut sleep: Pin<&mut monoio::time::Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            let mut table = self.0.borrow_mut();
            if !table.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                table.driver = Some(cx.waker().clone());
            }
            let Some(earliest) = table.earliest else { return Poll::Pending };
            drop(table);
            if sleep.deadline() != earliest {
                sleep.as_mut().reset(earliest);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A fresh reading, not the turn's (`crate::now`): the entry fired by the clock, and
            // an instant taken earlier in the turn could leave the earliest alarm unrung and
            // this loop finding the entry fired again and again.
            self.0.borrow_mut().ring(Instant::now());
        }
    }
}

/// One wait's deadline in an [`Alarms`] set: resolves when it rings. Frees its slot when
/// dropped.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Alarm {
    alarms: Alarms,
    limit: Duration,
    key: Option<usize>,
}

impl Future for Alarm {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.get_mut();
        let mut table = me.alarms.0.borrow_mut();
        let Some(key) = me.key else {
            let now = Instant::from_std(crate::now());
            let due = now.checked_add(me.limit).unwrap_or(now + FAR);
            me.key = Some(table.insert(due, cx.waker().clone()));
            return Poll::Pending;
        };
        match table.slots.get_mut(key) {
            Some(slot) if slot.state == State::Pending => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut table = self.alarms.0.borrow_mut();
        if let Some(slot) = table.slots.get_mut(key) {
            slot.state = State::Free;
            slot.waker = None;
            table.free.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    use crate::run_on_test_runtime as run;

    /// Runs `waits` beside the driver; returns what they return.
    async fn driven<T>(alarms: &Alarms, waits: impl Future<Output = T>) -> T {
        monoio::select! {
            () = alarms.drive() => unreachable!("the driver never ends"),
            r = waits => r,
        }
    }

    #[test]
    fn each_alarm_rings_at_its_own_deadline_in_any_order() {
        run(async {
            let alarms = Alarms::new();
            let start = Instant::now();
            let timed = |limit: u64| {
                let alarm = alarms.after(ms(limit));
                async move {
                    alarm.await;
                    start.elapsed()
                }
            };
            let (a, b, c) = driven(&alarms, async {
                let (a, b, c) = (timed(120), timed(40), timed(80));
                monoio::join!(a, b, c)
            })
            .await;
            for (took, limit) in [(a, 120), (b, 40), (c, 80)] {
                assert!(took >= ms(limit) && took < ms(limit) + Duration::from_secs(2), "{took:?}");
            }
            assert!(b < c && c < a, "{b:?} {c:?} {a:?}");
        });
    }

    #[test]
    fn a_wait_that_ends_first_frees_its_slot_and_leaves_the_others_timed() {
        run(async {
            let alarms = Alarms::new();
            driven(&alarms, async {
                for round in 0..3 {
                    // Ends long before its alarm: the slot is reused by the next round.
                    let early = alarms.after(Duration::from_secs(60));
                    let won = monoio::select! {
                        () = early => false,
                        () = monoio::time::sleep(ms(5)) => true,
                    };
                    assert!(won, "round {round}");
                }
                let started = Instant::now();
                alarms.after(ms(30)).await;
                let took = started.elapsed();
                assert!(took >= ms(30) && took < Duration::from_secs(2), "{took:?}");
            })
            .await;
            let table = alarms.0.borrow();
            assert_eq!(table.slots.len(), 1, "one slot, reused");
            assert!(table.slots.iter().all(|s| s.state == State::Free));
        });
    }

    #[test]
    fn an_alarm_never_polled_takes_no_slot() {
        run(async {
            let alarms = Alarms::new();
            drop(alarms.after(ms(1)));
            assert!(alarms.0.borrow().slots.is_empty());
            assert!(alarms.0.borrow().earliest.is_none());
        });
    }
}
