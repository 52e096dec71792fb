//! Per-backend active health state: the rise/fall state machine, and the shared cell the
//! `lb-health` thread writes and the pickers read (relaxed atomic loads, no lock on the data
//! plane).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

/// The whole share of new requests, in per mille.
pub const FULL_SHARE: u64 = 1000;
/// The share a backend gets when its slow start begins, in per mille.
const RAMP_FLOOR: u64 = 100;

/// What the active checks currently say about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Not checked yet (or checks are off); pickers treat it as up.
    Unknown,
    /// Passing: receives traffic.
    Up,
    /// `fall` consecutive checks failed: skipped by the pickers unless every candidate is down.
    Down,
}

impl HealthState {
    /// The admin API and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Up => 1,
            Self::Down => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Unknown,
        }
    }
}

/// The rise/fall state machine with its counters (pure; the shared cell wraps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Checks passed in a row (0 after a failure).
    pub consecutive_ok: u32,
    /// Checks failed in a row (0 after a pass).
    pub consecutive_fail: u32,
    /// Checks passed since the backend was added.
    pub checks_ok: u64,
    /// Checks failed since the backend was added.
    pub checks_failed: u64,
}

impl HealthCounters {
    /// Counts one check and returns the state after it.
    ///
    /// `Unknown` becomes `Up` on the first pass and `Down` after `fall` failures in a row;
    /// `Up` becomes `Down` after `fall` failures in a row; `Down` becomes `Up` after `rise`
    /// passes in a row.
    pub fn record(
        &mut self,
        state: HealthState,
        passed: bool,
        rise: u32,
        fall: u32,
    ) -> HealthState {
        if passed {
            self.checks_ok += 1;
            self.consecutive_fail = 0;
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            match state {
                HealthState::Down if self.consecutive_ok < rise => HealthState::Down,
                _ => HealthState::Up,
            }
        } else {
            self.checks_failed += 1;
            self.consecutive_ok = 0;
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            if self.consecutive_fail >= fall { HealthState::Down } else { state }
        }
    }
}

/// Counters, last error and time of the last check: written by `lb-health`, read by the admin.
#[derive(Debug, Clone, Default)]
struct Detail {
    counters: HealthCounters,
    last_error: Option<String>,
    checked_at_ms: Option<u64>,
}

/// One backend's active health, shared through its `Arc<Backend>`.
#[derive(Debug, Default)]
pub struct BackendHealth {
    state: AtomicU8,
    /// Slow start: when the ramp began (monotonic ms, plus one; 0 = not ramping) and its length.
    ramp_start: AtomicU64,
    ramp_ms: AtomicU64,
    detail: Mutex<Detail>,
}

/// A state change one check caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before the check.
    pub from: HealthState,
    /// State after it.
    pub to: HealthState,
}

/// A copy of a backend's active health, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Current state.
    pub state: HealthState,
    /// Counters.
    pub counters: HealthCounters,
    /// Why the last failed check failed (kept after later passes).
    pub last_error: Option<String>,
    /// When the last check finished, in milliseconds since the Unix epoch.
    pub checked_at_ms: Option<u64>,
    /// Share of new requests the pickers give it now, in per mille (below [`FULL_SHARE`] only
    /// during slow start).
    pub share: u64,
}

impl BackendHealth {
    /// The current state (one relaxed load).
    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.state.load(Relaxed))
    }

    /// Whether the active checks took the backend out.
    pub fn is_down(&self) -> bool {
        self.state.load(Relaxed) == HealthState::Down.to_u8()
    }

    /// Whether a picker should pass over the backend at `now_ms` (monotonic): it is down, or it
    /// is in slow start and `coin` (uniform in `0..FULL_SHARE`, drawn only then) falls beyond
    /// its current share. Two relaxed loads when neither applies.
    pub fn skip(&self, now_ms: u64, coin: impl FnOnce() -> u64) -> bool {
        if self.is_down() {
            return true;
        }
        let share = self.share(now_ms);
        share < FULL_SHARE && coin() >= share
    }

    /// The share of new requests the backend should get at `now_ms`, in per mille: rising
    /// linearly from 10% to all of it over the slow start, [`FULL_SHARE`] outside one.
    pub fn share(&self, now_ms: u64) -> u64 {
        let start = self.ramp_start.load(Relaxed);
        if start == 0 {
            return FULL_SHARE;
        }
        let ramp = self.ramp_ms.load(Relaxed).max(1);
        let elapsed = now_ms.saturating_sub(start - 1);
        if elapsed >= ramp { FULL_SHARE } else { (elapsed * FULL_SHARE / ramp).max(RAMP_FLOOR) }
    }

    /// Starts a slow start of `ramp_ms` at `now_ms` (monotonic); 0 means none.
    pub fn start_slow_start(&self, now_ms: u64, ramp_ms: u64) {
        if ramp_ms > 0 {
            self.ramp_ms.store(ramp_ms, Relaxed);
            self.ramp_start.store(now_ms + 1, Relaxed);
        }
    }

    /// Ends a finished slow start, so pickers are back to one load (`lb-health` only).
    pub fn finish_slow_start(&self, now_ms: u64) {
        if self.ramp_start.load(Relaxed) != 0 && self.share(now_ms) == FULL_SHARE {
            self.ramp_start.store(0, Relaxed);
        }
    }

    /// Records one check (`Err` carries why it failed); returns the transition it caused.
    /// Only the `lb-health` thread calls this.
    pub fn record(
        &self,
        result: Result<(), String>,
        rise: u32,
        fall: u32,
        now_ms: u64,
    ) -> Option<Transition> {
        let mut detail = self.detail.lock().unwrap_or_else(|e| e.into_inner());
        let from = self.state();
        let to = detail.counters.record(from, result.is_ok(), rise, fall);
        if let Err(e) = result {
            detail.last_error = Some(e);
        }
        detail.checked_at_ms = Some(now_ms);
        self.state.store(to.to_u8(), Relaxed);
        (from != to).then_some(Transition { from, to })
    }

    /// A copy of state, counters, last error and share at `now_ms` (monotonic).
    pub fn snapshot(&self, now_ms: u64) -> HealthSnapshot {
        let detail = self.detail.lock().unwrap_or_else(|e| e.into_inner()).clone();
        HealthSnapshot {
            state: self.state(),
            counters: detail.counters,
            last_error: detail.last_error,
            checked_at_ms: detail.checked_at_ms,
            share: self.share(now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HealthState::{Down, Unknown, Up};
    use super::*;

    /// Runs `checks` (true = pass) from `Unknown` and returns the state after each.
    fn run(checks: &[bool], rise: u32, fall: u32) -> Vec<HealthState> {
        let mut c = HealthCounters::default();
        let mut state = Unknown;
        checks
            .iter()
            .map(|&ok| {
                state = c.record(state, ok, rise, fall);
                state
            })
            .collect()
    }

    #[test]
    fn unknown_goes_up_on_first_pass_and_down_after_fall_failures() {
        assert_eq!(run(&[true], 2, 3), [Up]);
        assert_eq!(run(&[false, false, false], 2, 3), [Unknown, Unknown, Down]);
    }

    #[test]
    fn up_needs_fall_failures_in_a_row() {
        assert_eq!(
            run(&[true, false, false, true, false, false, false], 2, 3),
            [Up, Up, Up, Up, Up, Up, Down]
        );
    }

    #[test]
    fn down_needs_rise_passes_in_a_row() {
        assert_eq!(run(&[false, true, false, true, true], 2, 1), [Down, Down, Down, Down, Up]);
        assert_eq!(run(&[false, true], 1, 1), [Down, Up]);
    }

    #[test]
    fn shared_cell_reports_transitions_and_keeps_last_error() {
        let h = BackendHealth::default();
        assert_eq!(h.state(), Unknown);
        assert!(!h.is_down());
        assert_eq!(h.record(Ok(()), 1, 1, 10), Some(Transition { from: Unknown, to: Up }));
        assert_eq!(h.record(Ok(()), 1, 1, 20), None);
        let t = h.record(Err("status 503".into()), 1, 1, 30);
        assert_eq!(t, Some(Transition { from: Up, to: Down }));
        assert!(h.is_down());
        h.record(Ok(()), 1, 1, 40);
        let s = h.snapshot(0);
        assert_eq!(s.state, Up);
        assert_eq!(s.last_error.as_deref(), Some("status 503"));
        assert_eq!(s.checked_at_ms, Some(40));
        assert_eq!((s.counters.checks_ok, s.counters.checks_failed), (3, 1));
        assert_eq!((s.counters.consecutive_ok, s.counters.consecutive_fail), (1, 0));
    }

    #[test]
    fn slow_start_ramps_the_share_linearly_from_a_floor() {
        let h = BackendHealth::default();
        assert_eq!(h.share(5), FULL_SHARE);
        assert!(!h.skip(5, || unreachable!("no coin outside slow start")));
        h.start_slow_start(1_000, 1_000);
        assert_eq!(h.share(1_000), 100);
        assert_eq!(h.share(1_500), 500);
        assert_eq!(h.share(1_999), 999);
        assert_eq!(h.share(2_000), FULL_SHARE);
        assert!(h.skip(1_500, || 500) && !h.skip(1_500, || 499));
        h.finish_slow_start(1_999);
        assert_eq!(h.share(1_999), 999, "not finished yet");
        h.finish_slow_start(2_000);
        assert_eq!(h.share(1_500), FULL_SHARE);
        h.start_slow_start(0, 0);
        assert_eq!(h.share(0), FULL_SHARE, "0 means no slow start");
        // Down wins over everything.
        h.record(Err("x".into()), 1, 1, 0);
        assert!(h.skip(0, || 0));
    }
}
