//! Backend selection: the four algorithms and the per-backend counters they read.
//!
//! A [`Picker`] lives on one worker and holds only cursor and RNG state; everything an algorithm
//! learns about a backend lives in [`stats::LocalStats`], outside the picker, so an algorithm
//! switch (a new epoch) keeps every counter.

pub mod stats;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use self::stats::LocalStats;
use crate::health::BackendHealth;
use crate::health::state::FULL_SHARE;

/// How a worker chooses the backend for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each backend in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Fewest requests in flight across all workers; ties in turn.
    LeastConnections,
    /// Lowest average response time over the window; backends without samples first.
    ResponseTime,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 4] =
        [Self::RoundRobin, Self::Random, Self::LeastConnections, Self::ResponseTime];

    /// The configuration and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::LeastConnections => "least_connections",
            Self::ResponseTime => "response_time",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is not one of [`Algorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm `{0}` (valid: round_robin, random, least_connections, response_time)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// Per-worker selection state: a round-robin cursor (also used to break ties) and an RNG.
#[derive(Debug)]
pub struct Picker {
    cursor: Cell<usize>,
    rng: RefCell<fastrand::Rng>,
}

impl Picker {
    /// A picker whose cursor and RNG start from `seed`, so workers do not move in lockstep.
    pub fn new(seed: u64) -> Self {
        Self { cursor: Cell::new(seed as usize), rng: RefCell::new(fastrand::Rng::with_seed(seed)) }
    }

    /// Picks the index of a backend in `backends`, or `None` when every one is excluded.
    ///
    /// `excluded(i)` removes a backend from this choice (already tried, ejected). Work is
    /// O(n) in the number of backends with no allocation.
    pub fn pick<B: AsRef<LocalStats>>(
        &self,
        algorithm: Algorithm,
        backends: &[B],
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = match algorithm {
            Algorithm::Random => self.rng.borrow_mut().usize(..n),
            _ => self.cursor.get() % n,
        };
        // Candidates in round-robin order from `start`; the first best one wins ties.
        let mut order = (0..n).map(|k| (start + k) % n).filter(|&i| !excluded(i));
        let chosen = match algorithm {
            Algorithm::RoundRobin | Algorithm::Random => order.next(),
            Algorithm::LeastConnections => {
                order.min_by_key(|&i| (backends[i].as_ref().total_in_flight(), rank(i, start, n)))
            }
            Algorithm::ResponseTime => order
                .min_by_key(|&i| (response_time_score(backends[i].as_ref()), rank(i, start, n))),
        }?;
        if algorithm != Algorithm::Random {
            self.cursor.set(chosen + 1);
        }
        Some(chosen)
    }
}

impl Picker {
    /// [`pick`](Self::pick) that also passes over the backends whose active health says so
    /// (down, or held back by slow start; see [`BackendHealth::skip`]), but fails open: when
    /// nothing else is left and some candidate was passed over only for its health, it picks
    /// among those (still honouring `excluded`).
    ///
    /// The extra pass runs only in that case; healthy traffic pays two relaxed loads per
    /// candidate looked at.
    pub fn pick_healthy<'h, B: AsRef<LocalStats>>(
        &self,
        algorithm: Algorithm,
        backends: &[B],
        excluded: impl Fn(usize) -> bool,
        health: impl Fn(usize) -> &'h BackendHealth,
        now_ms: u64,
    ) -> Option<usize> {
        let passed_over = Cell::new(false);
        let healthy = self.pick(algorithm, backends, |i| {
            excluded(i)
                || (health(i).skip(now_ms, || self.rng.borrow_mut().u64(..FULL_SHARE)) && {
                    passed_over.set(true);
                    true
                })
        });
        match healthy {
            None if passed_over.get() => self.pick(algorithm, backends, excluded),
            found => found,
        }
    }
}

/// Position of `i` in the round-robin order that starts at `start`.
fn rank(i: usize, start: usize, n: usize) -> usize {
    (i + n - start) % n
}

/// Lower is better. A backend with no samples in the window and nothing in flight is a probe
/// target and comes first (it can never starve); one with no samples but a probe already in
/// flight waits behind the measured ones until that probe answers.
fn response_time_score(stats: &LocalStats) -> (u8, u64) {
    match stats.merged_avg_us() {
        None if stats.total_in_flight() == 0 => (0, 0),
        Some(avg) => (1, avg),
        None => (2, u64::from(stats.total_in_flight())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::stats::SharedStats;
    use super::*;

    struct B(LocalStats);
    impl AsRef<LocalStats> for B {
        fn as_ref(&self) -> &LocalStats {
            &self.0
        }
    }

    fn backends(n: usize) -> Vec<B> {
        (0..n).map(|_| B(LocalStats::new(Duration::from_secs(10)))).collect()
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("fastest".parse::<Algorithm>().unwrap_err().to_string().contains("round_robin"));
    }

    #[test]
    fn round_robin_cycles_and_skips_excluded() {
        let p = Picker::new(0);
        let b = backends(3);
        let picks: Vec<_> =
            (0..6).map(|_| p.pick(Algorithm::RoundRobin, &b, |_| false).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(p.pick(Algorithm::RoundRobin, &b, |i| i == 0), Some(1));
        assert_eq!(p.pick(Algorithm::RoundRobin, &b, |_| true), None);
        assert_eq!(p.pick(Algorithm::RoundRobin, &backends(0), |_| false), None);
    }

    #[test]
    fn pick_healthy_skips_down_backends_and_fails_open() {
        let p = Picker::new(0);
        let b = backends(3);
        let health: Vec<BackendHealth> = (0..3).map(|_| BackendHealth::default()).collect();
        let down = |i: usize| {
            health[i].record(Err("down".into()), 1, 1, 0);
        };
        down(0);
        down(1);
        let pick = |excluded: &dyn Fn(usize) -> bool| {
            p.pick_healthy(Algorithm::RoundRobin, &b, excluded, |i| &health[i], 0)
        };
        for _ in 0..4 {
            assert_eq!(pick(&|_| false), Some(2));
        }
        // Every candidate down: all of them are used again, in turn.
        down(2);
        let picks: Vec<_> = (0..3).map(|_| pick(&|_| false).unwrap()).collect();
        assert_eq!(picks.iter().collect::<std::collections::HashSet<_>>().len(), 3, "{picks:?}");
        // Failing open still honours the other exclusions.
        assert_eq!(pick(&|i| i != 1), Some(1));
        assert_eq!(pick(&|_| true), None);
    }

    #[test]
    fn pick_healthy_holds_back_a_backend_in_slow_start() {
        let p = Picker::new(0);
        let b = backends(2);
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        // Backend 1 just came back: a 10% share at the start of a long ramp.
        health[1].start_slow_start(0, 1_000_000);
        let ones = (0..1_000)
            .filter(|_| {
                p.pick_healthy(Algorithm::RoundRobin, &b, |_| false, |i| &health[i], 0) == Some(1)
            })
            .count();
        assert!((10..150).contains(&ones), "{ones} of 1000 picks");
        // Alone, it is still used (fail open), every time.
        let alone = |i: usize| i == 0;
        for _ in 0..10 {
            assert_eq!(
                p.pick_healthy(Algorithm::RoundRobin, &b, alone, |i| &health[i], 0),
                Some(1)
            );
        }
    }

    #[test]
    fn least_connections_prefers_idle_and_rotates_ties() {
        let p = Picker::new(0);
        let b = backends(3);
        let _busy = b[0].0.begin();
        let picks: Vec<_> =
            (0..4).map(|_| p.pick(Algorithm::LeastConnections, &b, |_| false).unwrap()).collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2), "ties rotate: {picks:?}");
    }

    #[test]
    fn response_time_probes_unsampled_then_prefers_fastest() {
        let p = Picker::new(0);
        let b = backends(2);
        let shared = SharedStats::new(1);
        b[0].0.record_response_time(1, Duration::from_micros(500));
        b[0].0.publish(&shared, 0, 1);
        // Backend 1 has no samples: it is probed first.
        assert_eq!(p.pick(Algorithm::ResponseTime, &b, |_| false), Some(1));
        let probe = b[1].0.begin();
        // While the probe is in flight, the measured backend is used.
        assert_eq!(p.pick(Algorithm::ResponseTime, &b, |_| false), Some(0));
        drop(probe);
        b[1].0.record_response_time(2, Duration::from_micros(100));
        b[1].0.publish(&shared, 0, 2);
        for _ in 0..5 {
            assert_eq!(p.pick(Algorithm::ResponseTime, &b, |_| false), Some(1));
        }
    }

    #[test]
    fn random_covers_all() {
        let p = Picker::new(7);
        let b = backends(4);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[p.pick(Algorithm::Random, &b, |_| false).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }
}
