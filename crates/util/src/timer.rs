//! [`Timer`]: one timer entry that bounds a sequence of waits in turn (a connection's, or one
//! request's), so a request does not make (and unregister) a timer of its own for each read
//! and write. Used from the task that waits, on its worker's thread.
//!
//! `monoio::time::timeout` builds a timer entry for each wait, registers it in the runtime's
//! timer wheel when the wait does not finish at once, and removes it when the wait ends: three
//! or more times per proxied request. A [`Timer`] keeps one entry armed at the earliest
//! deadline it was given. Deadlines of later waits lie later (the clock moves on), so the entry
//! usually stays where it is; when it fires before the wait it now bounds is due, it is moved
//! to that wait's deadline. So it fires at most once per timeout period of a busy connection,
//! and a connection that goes idle is woken at most once early (at the deadline its last
//! exchange left), after which its entry waits for the idle deadline. A firing that finds no
//! bounded wait in progress costs its task one poll and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::time::{Instant, Sleep};

/// How far ahead a timer that bounds nothing yet is set (it is reset before its first wait).
const UNSET: Duration = Duration::from_secs(24 * 60 * 60);

/// A wait bounded by [`Timer::within`] ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// One timer entry for a sequence of bounded waits, one at a time (see the module header).
    /// Pinned where it lives: on the stack of the task that waits (`std::pin::pin!`), or boxed
    /// in the connection it serves.
    #[derive(Debug)]
    pub struct Timer {
        #[pin]
        sleep: Sleep,
    }
}

impl Timer {
    /// A timer, armed by its first wait. Needs the worker's runtime (with its timer enabled).
    pub fn new() -> Self {
        Self { sleep: monoio::time::sleep(UNSET) }
    }

    /// Runs `fut` to its end, or for at most `limit` from now (the turn's [`now`](crate::now);
    /// then `fut` is dropped and the answer is [`Elapsed`]), as `monoio::time::timeout` would.
    pub fn within<F: Future>(self: Pin<&mut Self>, limit: Duration, fut: F) -> Within<'_, F> {
        self.within_from(crate::now(), limit, fut)
    }

    /// [`within`](Self::within) for a limit that began at `start` (a wait that resumes, or
    /// one that starts at an earlier event): at once [`Elapsed`] when it already ran out.
    pub fn within_from<F: Future>(
        self: Pin<&mut Self>,
        start: impl Into<Instant>,
        limit: Duration,
        fut: F,
    ) -> Within<'_, F> {
        let start = start.into();
        let due = start.checked_add(limit).unwrap_or(start + UNSET);
        let mut sleep = self.project().sleep;
        if sleep.deadline() > due {
            sleep.as_mut().reset(due);
        }
        Within { fut, sleep, due }
    }
}

pin_project_lite::pin_project! {
    /// A wait bounded by a [`Timer`]: [`Timer::within`]'s future.
    #[must_use = "futures do nothing unless polled"]
    pub struct Within<'t, F> {
        #[pin]
        fut: F,
        sleep: Pin<&'t mut Sleep>,
        due: Instant,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        if let Poll::Ready(output) = me.fut.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // The entry may be set earlier than `due` (by an earlier wait): when it fires early,
        // it moves to `due` and waits again.
        while me.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= *me.due {
                return Poll::Ready(Err(Elapsed));
            }
            me.sleep.as_mut().reset(*me.due);
        }
        Poll::Pending
    }
}

impl Default for Timer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    use crate::run_on_test_runtime as run;

    #[test]
    fn a_wait_that_ends_in_time_gives_its_output() {
        run(async {
            let mut timer = pin!(Timer::new());
            assert_eq!(timer.as_mut().within(Duration::from_secs(5), async { 7 }).await, Ok(7));
            let slept =
                timer.as_mut().within(Duration::from_secs(5), monoio::time::sleep(ms(5))).await;
            assert_eq!(slept, Ok(()));
        });
    }

    #[test]
    fn a_wait_longer_than_its_limit_elapses_at_the_limit() {
        run(async {
            let mut timer = pin!(Timer::new());
            elapses_after(timer.as_mut(), ms(20)).await;
        });
    }

    #[test]
    fn an_earlier_deadline_left_armed_does_not_cut_a_later_wait_short() {
        run(async {
            let mut timer = pin!(Timer::new());
            // Leaves the entry armed at +30 ms.
            assert_eq!(timer.as_mut().within(ms(30), async {}).await, Ok(()));
            // A wait bounded at +80 ms that ends at +50 ms: the entry fires at +30 ms first.
            let started = Instant::now();
            let r = timer.as_mut().within(ms(80), monoio::time::sleep(ms(50))).await;
            assert_eq!(r, Ok(()));
            assert!(started.elapsed() >= ms(50));
            // Then a wait that never ends elapses at its own limit, not earlier.
            elapses_after(timer.as_mut(), ms(40)).await;
        });
    }

    #[test]
    fn a_shorter_limit_after_a_longer_one_still_holds() {
        run(async {
            let mut timer = pin!(Timer::new());
            assert_eq!(timer.as_mut().within(Duration::from_secs(60), async {}).await, Ok(()));
            let took = elapses_after(timer.as_mut(), ms(20)).await;
            assert!(took < Duration::from_secs(5), "{took:?}");
        });
    }

    #[test]
    fn a_limit_that_began_earlier_runs_from_its_start() {
        run(async {
            let mut timer = pin!(Timer::new());
            let start = Instant::now();
            monoio::time::sleep(ms(30)).await;
            let never = std::future::pending::<()>();
            let r = timer.as_mut().within_from(start, ms(60), never).await;
            assert_eq!(r, Err(Elapsed));
            let took = start.elapsed();
            assert!(took >= ms(60) && took < ms(60) + Duration::from_secs(2), "{took:?}");
            // Already run out: elapses at once, after one poll of the wait.
            let r = timer.as_mut().within_from(start, ms(10), async { 1 }).await;
            assert_eq!(r, Ok(1), "a wait that is ready still gives its output");
            let r = timer.as_mut().within_from(start, ms(10), std::future::pending::<()>()).await;
            assert_eq!(r, Err(Elapsed));
        });
    }

    /// Waits on `timer` for a future that never ends; checks that it elapses, no earlier than
    /// `limit`, and returns how long it took.
    async fn elapses_after(timer: Pin<&mut Timer>, limit: Duration) -> Duration {
        let started = Instant::now();
        let r = timer.within(limit, std::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        let took = started.elapsed();
        assert!(took >= limit, "{took:?}");
        took
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
