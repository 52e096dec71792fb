//! The process clock every thread shares: milliseconds on a monotonic clock since the first
//! call, cheap enough for the data path and comparable across workers.
//!
//! On a worker, [`now`] reads the clock once per turn: a [`Turn`] spans one poll of a
//! connection's task (opened by [`CatchUnwind`](crate::CatchUnwind)), and every reading inside
//! it gives the instant of the first one, as nginx's cached time does per event-loop pass. A
//! poll does not wait, so the instant is at most that poll's own run time old; an HTTP/1.1
//! request's seven readings (deadlines, response times, the pool's idle stamps, the access
//! record) then cost two (epoll) to four (io_uring, where each write completes in a turn of its
//! own). Outside a turn (other threads, tasks that open none) [`now`] reads
//! the clock every time.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

/// The instant the shared clock counts from (its first use).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds on a monotonic clock shared by every thread of the process ([`now`]'s).
pub fn now_ms() -> u64 {
    ms_at(now())
}

/// What [`now`] gives on this thread.
#[derive(Clone, Copy)]
enum TurnClock {
    /// No turn is open: every reading goes to the clock.
    Off,
    /// A turn is open and has not read the clock yet.
    Unread,
    /// A turn is open and read the clock at this instant.
    Read(Instant),
}

thread_local! {
    static TURN_CLOCK: Cell<TurnClock> = const { Cell::new(TurnClock::Off) };
}

/// The current instant: inside a [`Turn`], the one its first reading took.
#[inline]
pub fn now() -> Instant {
    TURN_CLOCK.with(|turn| match turn.get() {
        TurnClock::Read(at) => at,
        TurnClock::Unread => {
            let at = Instant::now();
            turn.set(TurnClock::Read(at));
            at
        }
        TurnClock::Off => Instant::now(),
    })
}

/// One turn of a task on this thread: while it lives, [`now`] reads the clock at most once.
/// A turn opened inside another is part of the outer one. Closed when dropped.
#[must_use = "a turn lasts while it is held"]
pub struct Turn {
    /// Whether this turn opened the thread's (and so closes it).
    outer: bool,
}

impl Turn {
    /// Opens a turn on this thread, unless one is open already.
    #[inline]
    pub fn begin() -> Self {
        TURN_CLOCK.with(|turn| {
            let outer = matches!(turn.get(), TurnClock::Off);
            if outer {
                turn.set(TurnClock::Unread);
            }
            Self { outer }
        })
    }
}

impl Drop for Turn {
    #[inline]
    fn drop(&mut self) {
        if self.outer {
            TURN_CLOCK.with(|turn| turn.set(TurnClock::Off));
        }
    }
}

/// [`now_ms`] at `at`, an instant already read: where a caller has just read the clock, this
/// spares it a second reading. Instants before the clock's origin count as 0.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_already_read_gives_the_same_milliseconds() {
        let before = now_ms();
        let at = Instant::now();
        let after = now_ms();
        assert!((before..=after).contains(&ms_at(at)));
    }

    #[test]
    fn a_turn_reads_the_clock_once_and_only_while_it_lasts() {
        let outside = now();
        let turn = Turn::begin();
        let first = now();
        assert!(first >= outside);
        while Instant::now() == first {}
        assert_eq!(now(), first, "inside a turn every reading gives the first one");
        let inner = Turn::begin();
        drop(inner);
        assert_eq!(now(), first, "a nested turn's end does not end the outer turn");
        drop(turn);
        assert!(now() > first, "after the turn the clock is read again");
    }
}
