//! The cache's metrics, beside the cache: each worker's shard counters, published into the
//! worker's own slot, summed on a scrape (`fulcrum_cache_*`) and for the admin API.

use fulcrum_telemetry::{Collect, Counter, Encoder, Gauge, Kind, PerWorker};

use crate::shard::CacheStats;

/// One worker's published shard counters.
#[derive(Debug, Default)]
struct Slot {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
    bytes: Gauge,
}

/// Every worker's cache counters (`Arc`-shared by the workers, the registry and the admin API).
#[derive(Debug)]
pub struct CacheMetrics {
    slots: PerWorker<Slot>,
}

/// Cache counters summed over every worker's shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTotals {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Cacheable lookups that found nothing fresh.
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes charged now (key, head, body and bookkeeping).
    pub bytes: u64,
}

impl CacheMetrics {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { slots: PerWorker::new(workers) }
    }

    /// Copies worker `worker`'s shard counters into its slot (that worker only).
    pub fn publish(&self, worker: usize, stats: &CacheStats) {
        let slot = self.slots.get(worker);
        slot.hits.add(stats.hits.saturating_sub(slot.hits.get()));
        slot.misses.add(stats.misses.saturating_sub(slot.misses.get()));
        slot.entries.set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        slot.bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
    }

    /// The counters summed over every worker (as of their last publish).
    pub fn totals(&self) -> CacheTotals {
        let gauge = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        CacheTotals {
            hits: self.slots.sum(|s| s.hits.get()),
            misses: self.slots.sum(|s| s.misses.get()),
            entries: self.slots.sum(|s| gauge(&s.entries)),
            bytes: self.slots.sum(|s| gauge(&s.bytes)),
        }
    }
}

impl Collect for CacheMetrics {
    fn collect(&self, out: &mut Encoder) {
        let t = self.totals();
        for (name, kind, help, value) in [
            ("fulcrum_cache_hits_total", Kind::Counter, "Responses served from the cache.", t.hits),
            (
                "fulcrum_cache_misses_total",
                Kind::Counter,
                "Cacheable requests not found in the cache.",
                t.misses,
            ),
            ("fulcrum_cache_bytes", Kind::Gauge, "Bytes held by the response cache.", t.bytes),
            ("fulcrum_cache_entries", Kind::Gauge, "Responses held by the cache.", t.entries),
        ] {
            out.family(name, kind, help);
            out.sample(name, &[], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_publish_and_the_totals_sum() {
        let m = CacheMetrics::new(2);
        m.publish(
            0,
            &CacheStats { hits: 3, misses: 1, entries: 2, bytes: 100, ..Default::default() },
        );
        m.publish(1, &CacheStats { hits: 1, entries: 1, bytes: 50, ..Default::default() });
        m.publish(
            0,
            &CacheStats { hits: 4, misses: 1, entries: 1, bytes: 60, ..Default::default() },
        );
        assert_eq!(m.totals(), CacheTotals { hits: 5, misses: 1, entries: 2, bytes: 110 });
        let registry = fulcrum_telemetry::Registry::default();
        registry.register(std::sync::Arc::new(m));
        assert!(registry.render().contains("fulcrum_cache_hits_total 5\n"));
    }
}
