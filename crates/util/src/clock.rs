//! The process clock every thread shares: milliseconds on a monotonic clock since the first
//! call, cheap enough for the data path and comparable across workers.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on a monotonic clock shared by every thread of the process.
pub fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}
