//! The connection's defence counters: what a peer may make it do before it answers with
//! GOAWAY(ENHANCE_YOUR_CALM). Plain numbers owned by the connection, on its thread.
//!
//! Two kinds of bound:
//! - rates over a sliding one-second window ([`Rate`], HAProxy's `freq_ctr` idea: the
//!   current period's count plus the previous period's, weighted by how much of it still
//!   overlaps the window): stream resets (the peer's early ones and those it provokes from us),
//!   control frames that demand an answer or are ignored (SETTINGS, PING, unknown types, frames
//!   on closed streams) and empty frames;
//! - ratios to useful work (Envoy's choice), which need no clock: WINDOW_UPDATE frames against
//!   the DATA frames we sent and the streams opened, PRIORITY frames against streams opened.

use super::{Flood, Limits};

/// Length of the sliding window, in milliseconds.
const PERIOD_MS: u64 = 1000;

/// Events counted over a sliding one-second window.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    /// Start of the current period (ms).
    start: u64,
    /// Events in the current period.
    cur: u32,
    /// Events in the previous period.
    prev: u32,
}

impl Rate {
    /// Counts one event at `now` (ms) and returns the estimated count over the last second.
    fn hit(&mut self, now: u64) -> u32 {
        let elapsed = now.saturating_sub(self.start);
        if elapsed >= 2 * PERIOD_MS {
            *self = Rate { start: now, cur: 0, prev: 0 };
        } else if elapsed >= PERIOD_MS {
            self.prev = self.cur;
            self.cur = 0;
            self.start += PERIOD_MS;
        }
        self.cur = self.cur.saturating_add(1);
        let into = now.saturating_sub(self.start).min(PERIOD_MS);
        // The part of the previous period still inside the window.
        let carried = u64::from(self.prev) * (PERIOD_MS - into) / PERIOD_MS;
        self.cur.saturating_add(u32::try_from(carried).unwrap_or(u32::MAX))
    }
}

/// The counters of one connection, checked as frames arrive.
#[derive(Debug, Clone)]
pub(super) struct Guard {
    limits: Limits,
    resets: Rate,
    control: Rate,
    empty: Rate,
    /// Streams the peer opened, or we opened (the useful work that allows PRIORITY and
    /// WINDOW_UPDATE frames).
    streams: u64,
    /// DATA frames we sent.
    data_sent: u64,
    window_updates: u64,
    priorities: u64,
}

impl Guard {
    pub(super) fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            resets: Rate::default(),
            control: Rate::default(),
            empty: Rate::default(),
            streams: 0,
            data_sent: 0,
            window_updates: 0,
            priorities: 0,
        }
    }

    /// A stream reset early by the peer, or reset by us because of what the peer sent.
    pub(super) fn reset(&mut self, now: u64) -> Result<(), Flood> {
        check(self.resets.hit(now), self.limits.max_resets_per_sec, Flood::Resets)
    }

    /// A frame that costs an answer or is ignored: SETTINGS, PING, unknown types, frames on
    /// closed streams.
    pub(super) fn control(&mut self, now: u64) -> Result<(), Flood> {
        check(self.control.hit(now), self.limits.max_control_frames_per_sec, Flood::Control)
    }

    /// A frame without payload that carries no end of stream or block (empty DATA, empty
    /// HEADERS or CONTINUATION fragments).
    pub(super) fn empty(&mut self, now: u64) -> Result<(), Flood> {
        check(self.empty.hit(now), self.limits.max_empty_frames_per_sec, Flood::EmptyFrames)
    }

    /// A stream was opened.
    pub(super) fn stream_opened(&mut self) {
        self.streams += 1;
    }

    /// We sent a DATA frame.
    pub(super) fn data_sent(&mut self) {
        self.data_sent += 1;
    }

    /// A WINDOW_UPDATE arrived: allowed while they stay below
    /// `10 + 2 * (streams + window_updates_per_data_frame * DATA frames sent)`.
    pub(super) fn window_update(&mut self) -> Result<(), Flood> {
        self.window_updates += 1;
        let per_data = u64::from(self.limits.window_updates_per_data_frame);
        let allowed = 10 + 2 * (self.streams + per_data * self.data_sent);
        if self.window_updates > allowed { Err(Flood::WindowUpdates) } else { Ok(()) }
    }

    /// A PRIORITY frame arrived: allowed while they stay below
    /// `priority_frames_per_stream * (1 + streams)`.
    pub(super) fn priority(&mut self) -> Result<(), Flood> {
        self.priorities += 1;
        let allowed = u64::from(self.limits.priority_frames_per_stream) * (1 + self.streams);
        if self.priorities > allowed { Err(Flood::Priority) } else { Ok(()) }
    }
}

fn check(count: u32, max: u32, flood: Flood) -> Result<(), Flood> {
    if count > max { Err(flood) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_slides_over_one_second() {
        let mut r = Rate::default();
        for i in 1..=10 {
            assert_eq!(r.hit(0), i);
        }
        // Half-way into the next period half the previous one still counts.
        assert_eq!(r.hit(1500), 1 + 5);
        // Two periods later nothing is left.
        assert_eq!(r.hit(4000), 1);
        // A clock that goes backwards is taken as no time passing.
        assert_eq!(r.hit(10), 2);
    }

    #[test]
    fn ratios_grow_with_useful_work() {
        let limits = Limits { priority_frames_per_stream: 2, ..Limits::default() };
        let mut g = Guard::new(limits);
        assert!(g.priority().is_ok());
        assert!(g.priority().is_ok());
        assert_eq!(g.priority(), Err(Flood::Priority));
        g.stream_opened();
        assert!(g.priority().is_ok());
        let mut g = Guard::new(Limits::default());
        for _ in 0..10 {
            assert!(g.window_update().is_ok());
        }
        assert_eq!(g.window_update(), Err(Flood::WindowUpdates));
        g.data_sent();
        assert!(g.window_update().is_ok());
    }
}
