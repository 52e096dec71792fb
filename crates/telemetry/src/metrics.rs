//! Metric families and their Prometheus text: the pieces every feature builds its own metrics
//! from, so a counter lives beside what it counts and adding one touches only that feature.
//!
//! - [`PerWorker`]: one value per worker, each in its own cache line. A worker writes only its
//!   own slot, with plain relaxed loads and stores ([`Counter`], [`Gauge`], [`Histogram`]): no
//!   shared write and no atomic read-modify-write on the data path, nothing to publish later. A
//!   scrape sums the slots.
//! - [`Collect`] and [`Registry`]: each feature registers a collector at start; `GET /metrics`
//!   (on `lb-admin`) calls [`Registry::render`], which asks each collector, in registration
//!   order, to write its families through an [`Encoder`].
//!
//! The encoder writes the text exposition format, version 0.0.4.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;

/// A value of one family per worker, padded so that workers never share a cache line.
#[derive(Debug)]
pub struct PerWorker<T> {
    slots: Box<[CachePadded<T>]>,
}

impl<T: Default> PerWorker<T> {
    /// One default slot for each of `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        Self { slots: (0..workers.max(1)).map(|_| CachePadded::new(T::default())).collect() }
    }
}

impl<T> PerWorker<T> {
    /// Worker `worker`'s slot (the last one for an index out of range, which a caller never
    /// passes: slots are made for every worker).
    #[inline]
    pub fn get(&self, worker: usize) -> &T {
        &self.slots[worker.min(self.slots.len() - 1)]
    }

    /// Every worker's slot, by index.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &**s)
    }

    /// The sum of `value` over every worker's slot.
    pub fn sum(&self, value: impl Fn(&T) -> u64) -> u64 {
        self.iter().map(value).sum()
    }
}

/// A monotonic counter written by one thread (its worker): `inc` is a relaxed load and store,
/// as cheap as a `Cell`, and readable from any thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge written by one thread: its worker's contribution to a process-wide value.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    #[inline]
    pub fn add(&self, delta: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// A histogram written by one thread: `B` buckets (the last one `+Inf`) over upper bounds the
/// family gives at each [`observe`](Self::observe), and the sum of the observations.
#[derive(Debug)]
pub struct Histogram<const B: usize> {
    buckets: [Counter; B],
    sum: Counter,
}

impl<const B: usize> Default for Histogram<B> {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| Counter::default()), sum: Counter::default() }
    }
}

impl<const B: usize> Histogram<B> {
    /// Counts `value` in the first bucket whose bound is at least `value` (`bounds` has `B - 1`
    /// entries, ascending).
    #[inline]
    pub fn observe(&self, bounds: &[u64], value: u64) {
        let i = bounds.iter().position(|&b| value <= b).unwrap_or(B - 1).min(B - 1);
        self.buckets[i].inc();
        self.sum.add(value);
    }

    /// Adds this slot's buckets and sum into `counts` and `sum` (a scrape merging workers).
    pub fn add_to(&self, counts: &mut [u64; B], sum: &mut u64) {
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c += b.get();
        }
        *sum += self.sum.get();
    }
}

/// The Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Writes families in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample: `name{label="value",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// The samples of one histogram series: cumulative buckets (`bounds` in the unit of the
    /// observations, written divided by `scale`, e.g. microseconds as seconds with 1e6), `_sum`
    /// and `_count`.
    pub fn histogram<const B: usize>(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[u64],
        scale: f64,
        counts: &[u64; B],
        sum: u64,
    ) {
        let mut cumulative = 0;
        for (i, n) in counts.iter().enumerate() {
            cumulative += n;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| (*b as f64 / scale).to_string());
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", sum as f64 / scale);
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Appends a label value escaped (backslash, quote, newline).
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Something that writes metric families on a scrape. Called on the scraping thread
/// (`lb-admin`); reads only what other threads publish (atomics, or a lock no data path takes).
pub trait Collect: Send + Sync {
    /// Writes this collector's families.
    fn collect(&self, out: &mut Encoder);
}

/// Every collector of the process, asked in registration order on each scrape.
#[derive(Default)]
pub struct Registry {
    collectors: Mutex<Vec<Arc<dyn Collect>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.collectors.lock().map_or(0, |c| c.len());
        f.debug_struct("Registry").field("collectors", &n).finish()
    }
}

impl Registry {
    /// Adds a collector (at start, before the first scrape).
    pub fn register(&self, collector: Arc<dyn Collect>) {
        if let Ok(mut c) = self.collectors.lock() {
            c.push(collector);
        }
    }

    /// Every family in the text exposition format.
    pub fn render(&self) -> String {
        let collectors = match self.collectors.lock() {
            Ok(c) => c.clone(),
            Err(_) => return String::new(),
        };
        let mut enc = Encoder { out: String::with_capacity(4096) };
        for c in &collectors {
            c.collect(&mut enc);
        }
        enc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Requests(PerWorker<Counter>, PerWorker<Histogram<3>>);

    impl Collect for Requests {
        fn collect(&self, out: &mut Encoder) {
            out.family("t_requests_total", Kind::Counter, "Requests.");
            out.sample("t_requests_total", &[("backend", "a\"b")], self.0.sum(Counter::get));
            out.family("t_seconds", Kind::Histogram, "Latency.");
            let (mut counts, mut sum) = ([0; 3], 0);
            for h in self.1.iter() {
                h.add_to(&mut counts, &mut sum);
            }
            out.histogram("t_seconds", &[], &[500, 1000], 1e6, &counts, sum);
        }
    }

    #[test]
    fn workers_write_their_slots_and_a_scrape_sums() {
        let r = Arc::new(Requests(PerWorker::new(2), PerWorker::new(2)));
        r.0.get(0).inc();
        r.0.get(1).add(2);
        r.1.get(0).observe(&[500, 1000], 400);
        r.1.get(1).observe(&[500, 1000], 5000);
        let registry = Registry::default();
        registry.register(r);
        let text = registry.render();
        assert!(text.contains("# TYPE t_requests_total counter\n"), "{text}");
        assert!(text.contains("t_requests_total{backend=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_sum 0.0054\nt_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn gauges_go_both_ways() {
        let g = Gauge::default();
        g.add(3);
        g.add(-1);
        assert_eq!(g.get(), 2);
        g.set(-5);
        assert_eq!(g.get(), -5);
    }
}
