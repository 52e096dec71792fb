//! The process clock every thread shares: milliseconds on a monotonic clock since the first
//! call, cheap enough for the data path and comparable across workers.

use std::sync::OnceLock;
use std::time::Instant;

/// The instant the shared clock counts from (its first use).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds on a monotonic clock shared by every thread of the process.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
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
}
