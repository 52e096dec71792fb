//! Backend selection: the four algorithms and the per-backend counters they read.
//!
//! A [`Picker`] lives on one worker and holds only cursor and RNG state; everything an algorithm
//! learns about a backend lives in [`stats::LocalStats`], outside the picker, so an algorithm
//! switch (a new epoch) keeps every counter.
//!
//! When the backends' weights differ, every algorithm weighs them (as nginx and HAProxy do):
//! round robin is nginx's smooth weighted round robin, random draws in proportion to weight,
//! least connections compares `(in flight + 1) / weight` and response time compares
//! `average / weight`. When all weights are equal the unweighted code runs unchanged.

mod stats;

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;

pub use fulcrum_config::Algorithm;
use fulcrum_model::{BackendHealth, FULL_SHARE};

pub use self::stats::{InFlight, LocalStats};

/// A backend as the pickers see it: this worker's counters for it and its weight.
pub trait Candidate {
    /// This worker's counters (and smooth round-robin state) for the backend.
    fn stats(&self) -> &LocalStats;
    /// The backend's relative weight, 1..=[`MAX_WEIGHT`](fulcrum_config::MAX_WEIGHT).
    fn weight(&self) -> u32;
}

impl<C: Candidate> Candidate for std::rc::Rc<C> {
    fn stats(&self) -> &LocalStats {
        (**self).stats()
    }
    fn weight(&self) -> u32 {
        (**self).weight()
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
    /// `excluded(i)` removes a backend from this choice (already tried, ejected); it is called
    /// at most once per backend. `weighted` says the backends' weights differ (computed once
    /// per epoch): only then are weights read. Work is O(n) in the number of backends with no
    /// allocation.
    pub fn pick<B: Candidate>(
        &self,
        algorithm: Algorithm,
        weighted: bool,
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
        let stats = |i: usize| backends[i].stats();
        let chosen = match algorithm {
            _ if weighted => self.pick_weighted(algorithm, backends, order, start),
            Algorithm::RoundRobin | Algorithm::Random => order.next(),
            Algorithm::LeastConnections => {
                order.min_by_key(|&i| (stats(i).total_in_flight(), rank(i, start, n)))
            }
            Algorithm::ResponseTime => {
                order.min_by_key(|&i| (response_time_score(stats(i)), rank(i, start, n)))
            }
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
    pub fn pick_healthy<'h, B: Candidate>(
        &self,
        algorithm: Algorithm,
        weighted: bool,
        backends: &[B],
        excluded: impl Fn(usize) -> bool,
        health: impl Fn(usize) -> &'h BackendHealth,
        now_ms: u64,
    ) -> Option<usize> {
        if algorithm == Algorithm::ResponseTime {
            for b in backends {
                b.stats().refresh_merged(now_ms);
            }
        }
        let passed_over = Cell::new(false);
        let healthy = self.pick(algorithm, weighted, backends, |i| {
            excluded(i)
                || (health(i).skip(now_ms, || self.rng.borrow_mut().u64(..FULL_SHARE)) && {
                    passed_over.set(true);
                    true
                })
        });
        match healthy {
            None if passed_over.get() => self.pick(algorithm, weighted, backends, excluded),
            found => found,
        }
    }
}

impl Picker {
    /// [`pick`](Self::pick) for backends whose weights differ: `candidates` are the indices not
    /// excluded, in round-robin order from `start`.
    fn pick_weighted<B: Candidate>(
        &self,
        algorithm: Algorithm,
        backends: &[B],
        candidates: impl Iterator<Item = usize>,
        start: usize,
    ) -> Option<usize> {
        let n = backends.len();
        let weight = |i: usize| u64::from(backends[i].weight().max(1));
        let in_turn = |a: usize, b: usize| rank(a, start, n).cmp(&rank(b, start, n));
        match algorithm {
            Algorithm::RoundRobin => smooth_weighted(backends, candidates, weight),
            Algorithm::Random => self.weighted_random(candidates, weight),
            Algorithm::LeastConnections => candidates.min_by(|&a, &b| {
                let load = |i: usize| u64::from(backends[i].stats().total_in_flight()) + 1;
                per_weight(load(a), weight(a), load(b), weight(b)).then(in_turn(a, b))
            }),
            Algorithm::ResponseTime => candidates.min_by(|&a, &b| {
                let score = |i: usize| (response_time_score(backends[i].stats()), weight(i));
                weighted_response_time(score(a), score(b)).then(in_turn(a, b))
            }),
        }
    }

    /// One draw among `candidates` in proportion to `weight`, by weighted reservoir sampling:
    /// the k-th candidate replaces the choice with probability weight / (total weight so far),
    /// which leaves each with weight / total. One pass, so `excluded` runs once per backend.
    fn weighted_random(
        &self,
        candidates: impl Iterator<Item = usize>,
        weight: impl Fn(usize) -> u64,
    ) -> Option<usize> {
        let mut total = 0;
        candidates.fold(None, |chosen, i| {
            total += weight(i);
            let draw = self.rng.borrow_mut().u64(..total);
            if draw < weight(i) { Some(i) } else { chosen }
        })
    }
}

/// nginx's smooth weighted round robin over `candidates`: each one's current weight grows by
/// its weight, the largest wins (the first in order on a tie) and gives back the candidates'
/// total. Weights 3:1 give `a a b a` (or a rotation of it): exactly 3:1 over every 4 picks,
/// interleaved rather than in bursts. The current weights live in this worker's [`LocalStats`].
fn smooth_weighted<B: Candidate>(
    backends: &[B],
    candidates: impl Iterator<Item = usize>,
    weight: impl Fn(usize) -> u64,
) -> Option<usize> {
    let mut total = 0;
    let mut best: Option<(usize, i64)> = None;
    for i in candidates {
        let weight = weight(i) as i64;
        let current = backends[i].stats().add_round_robin_weight(weight);
        total += weight;
        if best.is_none_or(|(_, max)| current > max) {
            best = Some((i, current));
        }
    }
    let (chosen, _) = best?;
    backends[chosen].stats().add_round_robin_weight(-total);
    Some(chosen)
}

/// Orders `load_a / weight_a` against `load_b / weight_b` by cross-multiplying (exact, no
/// float).
fn per_weight(load_a: u64, weight_a: u64, load_b: u64, weight_b: u64) -> Ordering {
    (u128::from(load_a) * u128::from(weight_b)).cmp(&(u128::from(load_b) * u128::from(weight_a)))
}

/// [`response_time_score`] with the measured averages divided by weight; probe order is
/// unchanged.
fn weighted_response_time(
    ((class_a, value_a), weight_a): ((u8, u64), u64),
    ((class_b, value_b), weight_b): ((u8, u64), u64),
) -> Ordering {
    class_a.cmp(&class_b).then_with(|| {
        if class_a == MEASURED {
            per_weight(value_a, weight_a, value_b, weight_b)
        } else {
            value_a.cmp(&value_b)
        }
    })
}

/// The [`response_time_score`] class of a backend with samples in the window.
const MEASURED: u8 = 1;

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
        Some(avg) => (MEASURED, avg),
        None => (2, u64::from(stats.total_in_flight())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use fulcrum_model::SharedStats;

    struct B(LocalStats, u32);
    impl Candidate for B {
        fn stats(&self) -> &LocalStats {
            &self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
    }

    fn backends(n: usize) -> Vec<B> {
        weighted(&vec![1; n])
    }

    fn weighted(weights: &[u32]) -> Vec<B> {
        weights
            .iter()
            .map(|&w| B(LocalStats::new(Duration::from_secs(10), SharedStats::new(1).writer(0)), w))
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_excluded() {
        let p = Picker::new(0);
        let b = backends(3);
        let picks: Vec<_> =
            (0..6).map(|_| p.pick(Algorithm::RoundRobin, false, &b, |_| false).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(p.pick(Algorithm::RoundRobin, false, &b, |i| i == 0), Some(1));
        assert_eq!(p.pick(Algorithm::RoundRobin, false, &b, |_| true), None);
        assert_eq!(p.pick(Algorithm::RoundRobin, false, &backends(0), |_| false), None);
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
            p.pick_healthy(Algorithm::RoundRobin, false, &b, excluded, |i| &health[i], 0)
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
                p.pick_healthy(Algorithm::RoundRobin, false, &b, |_| false, |i| &health[i], 0)
                    == Some(1)
            })
            .count();
        assert!((10..150).contains(&ones), "{ones} of 1000 picks");
        // Alone, it is still used (fail open), every time.
        let alone = |i: usize| i == 0;
        for _ in 0..10 {
            assert_eq!(
                p.pick_healthy(Algorithm::RoundRobin, false, &b, alone, |i| &health[i], 0),
                Some(1)
            );
        }
    }

    #[test]
    fn least_connections_prefers_idle_and_rotates_ties() {
        let p = Picker::new(0);
        let b = backends(3);
        let _busy = b[0].0.begin();
        let picks: Vec<_> = (0..4)
            .map(|_| p.pick(Algorithm::LeastConnections, false, &b, |_| false).unwrap())
            .collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2), "ties rotate: {picks:?}");
    }

    #[test]
    fn response_time_probes_unsampled_then_prefers_fastest() {
        let p = Picker::new(0);
        let b = backends(2);
        b[0].0.record_response_time(1, Duration::from_micros(500));
        b[0].0.publish(1);
        // Backend 1 has no samples: it is probed first.
        assert_eq!(p.pick(Algorithm::ResponseTime, false, &b, |_| false), Some(1));
        let probe = b[1].0.begin();
        // While the probe is in flight, the measured backend is used.
        assert_eq!(p.pick(Algorithm::ResponseTime, false, &b, |_| false), Some(0));
        drop(probe);
        b[1].0.record_response_time(2, Duration::from_micros(100));
        b[1].0.publish(2);
        for _ in 0..5 {
            assert_eq!(p.pick(Algorithm::ResponseTime, false, &b, |_| false), Some(1));
        }
    }

    #[test]
    fn random_covers_all() {
        let p = Picker::new(7);
        let b = backends(4);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[p.pick(Algorithm::Random, false, &b, |_| false).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    /// Picks `count` times (nothing excluded) and returns the indices.
    fn picks(p: &Picker, algorithm: Algorithm, b: &[B], count: usize) -> Vec<usize> {
        (0..count).map(|_| p.pick(algorithm, true, b, |_| false).unwrap()).collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_exactly() {
        let p = Picker::new(0);
        let b = weighted(&[3, 1]);
        let seq = picks(&p, Algorithm::RoundRobin, &b, 12);
        assert_eq!(seq, [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
        for window in seq.windows(4) {
            assert_eq!(window.iter().filter(|&&i| i == 0).count(), 3, "{seq:?}");
        }
        // nginx's example weights: exact shares over every period of 7, never a burst of b/c.
        let b = weighted(&[5, 1, 1]);
        let seq = picks(&p, Algorithm::RoundRobin, &b, 70);
        for period in seq.chunks(7) {
            let count = |k| period.iter().filter(|&&i| i == k).count();
            assert_eq!([count(0), count(1), count(2)], [5, 1, 1], "{seq:?}");
        }
        // Exclusions take a backend out of the rotation; the rest keep their proportions.
        let b = weighted(&[3, 2, 2]);
        let seq: Vec<_> =
            (0..8).map(|_| p.pick(Algorithm::RoundRobin, true, &b, |i| i == 0).unwrap()).collect();
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 4, "{seq:?}");
        assert!(!seq.contains(&0));
        assert_eq!(p.pick(Algorithm::RoundRobin, true, &b, |_| true), None);
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let p = Picker::new(11);
        let weights = [1u32, 2, 3, 4];
        let b = weighted(&weights);
        let draws = 10_000;
        let mut seen = [0u32; 4];
        for i in picks(&p, Algorithm::Random, &b, draws) {
            seen[i] += 1;
        }
        // Chi-square with 3 degrees of freedom; 16.27 is the 0.1% critical value.
        let chi2: f64 = seen
            .iter()
            .zip(weights)
            .map(|(&o, w)| {
                let expected = draws as f64 * f64::from(w) / 10.0;
                (f64::from(o) - expected).powi(2) / expected
            })
            .sum();
        assert!(chi2 < 16.27, "chi2 {chi2:.1}: {seen:?}");
        // Excluded candidates are never drawn; the others keep their ratio.
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[p.pick(Algorithm::Random, true, &b, |i| i == 3).unwrap()] += 1;
        }
        assert_eq!(seen[3], 0);
        assert!((450..900).contains(&seen[0]) && (1700..2300).contains(&seen[2]), "{seen:?}");
        assert_eq!(p.pick(Algorithm::Random, true, &b, |i| i != 1), Some(1));
        assert_eq!(p.pick(Algorithm::Random, true, &b, |_| true), None);
    }

    #[test]
    fn weighted_least_connections_loads_in_proportion() {
        let p = Picker::new(0);
        let b = weighted(&[3, 1]);
        // Each pick keeps its request in flight: (in flight + 1) / weight fills 3:1.
        let mut held = Vec::new();
        for _ in 0..8 {
            let i = p.pick(Algorithm::LeastConnections, true, &b, |_| false).unwrap();
            held.push(b[i].0.begin());
        }
        assert_eq!([b[0].0.total_in_flight(), b[1].0.total_in_flight()], [6, 2]);
        // Unweighted, the same backends would be filled evenly.
        let even = backends(2);
        let mut held_even = Vec::new();
        for _ in 0..8 {
            let i = p.pick(Algorithm::LeastConnections, false, &even, |_| false).unwrap();
            held_even.push(even[i].0.begin());
        }
        assert_eq!([even[0].0.total_in_flight(), even[1].0.total_in_flight()], [4, 4]);
        // The heavier backend excluded: the other is used whatever its load.
        assert_eq!(p.pick(Algorithm::LeastConnections, true, &b, |i| i == 0), Some(1));
    }

    #[test]
    fn weighted_response_time_divides_the_average_by_weight() {
        let p = Picker::new(0);
        let b = weighted(&[3, 1, 1]);
        b[0].0.record_response_time(1, Duration::from_micros(300));
        b[1].0.record_response_time(1, Duration::from_micros(200));
        b[0].0.publish(1);
        b[1].0.publish(1);
        // Backend 2 was never measured: still probed first.
        assert_eq!(p.pick(Algorithm::ResponseTime, true, &b, |_| false), Some(2));
        let probe = b[2].0.begin();
        // 300 µs / 3 beats 200 µs / 1; unweighted, the faster one wins.
        for _ in 0..3 {
            assert_eq!(p.pick(Algorithm::ResponseTime, true, &b, |_| false), Some(0));
        }
        assert_eq!(p.pick(Algorithm::ResponseTime, false, &b, |_| false), Some(1));
        assert_eq!(p.pick(Algorithm::ResponseTime, true, &b, |i| i == 0), Some(1));
        drop(probe);
    }

    #[test]
    fn weighted_pick_healthy_skips_down_backends() {
        let p = Picker::new(0);
        let b = weighted(&[5, 1, 1]);
        let health: Vec<BackendHealth> = (0..3).map(|_| BackendHealth::default()).collect();
        health[0].record(Err("down".into()), 1, 1, 0);
        for algorithm in Algorithm::ALL {
            let seq: Vec<_> = (0..6)
                .map(|_| p.pick_healthy(algorithm, true, &b, |_| false, |i| &health[i], 0))
                .collect();
            assert!(seq.iter().all(|i| matches!(i, Some(1 | 2))), "{algorithm}: {seq:?}");
        }
    }
}
