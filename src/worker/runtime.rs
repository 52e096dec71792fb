//! Building a worker's monoio runtime: io_uring when the kernel and seccomp allow it, epoll
//! otherwise. monoio's own fallback is silent, so the choice is made (and reported) here.

use std::fmt;

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::IoDriverChoice;
use crate::warn;

/// io_uring submission queue entries per worker.
const URING_ENTRIES: u32 = 1024;

/// The runtime type every worker runs.
pub type WorkerRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// The io driver a worker ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// Linux io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl fmt::Display for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoDriver::IoUring => "io_uring",
            IoDriver::Epoll => "epoll",
        })
    }
}

/// An io_uring runtime. `tuned` sets COOP_TASKRUN (completions run when the worker next enters
/// the kernel instead of interrupting it) and SINGLE_ISSUER (only the worker thread submits,
/// which is true of thread-per-core), both of which cut per-operation kernel work.
fn uring_runtime(tuned: bool) -> std::io::Result<monoio::Runtime<TimeDriver<IoUringDriver>>> {
    let mut builder = RuntimeBuilder::<IoUringDriver>::new().with_entries(URING_ENTRIES);
    if tuned {
        let mut ring = io_uring::IoUring::builder();
        ring.setup_coop_taskrun().setup_single_issuer();
        builder = builder.uring_builder(ring);
    }
    builder.enable_timer().build()
}

/// Builds a runtime for the chosen driver, falling back to epoll when io_uring is unavailable.
pub fn build(choice: IoDriverChoice) -> std::io::Result<(WorkerRuntime, IoDriver)> {
    if choice != IoDriverChoice::Epoll {
        let reason = if monoio::utils::detect_uring() {
            // Tuned ring first (kernel 6.0+); a kernel that refuses the flags gets a plain ring.
            match uring_runtime(true).or_else(|_| uring_runtime(false)) {
                Ok(rt) => return Ok((rt.into(), IoDriver::IoUring)),
                Err(e) => e.to_string(),
            }
        } else {
            "io_uring is not available (old kernel, or denied by seccomp)".to_owned()
        };
        warn!("io_uring unavailable, falling back to epoll", reason = reason);
    }
    let rt =
        RuntimeBuilder::<LegacyDriver>::new().with_entries(URING_ENTRIES).enable_timer().build()?;
    Ok((rt.into(), IoDriver::Epoll))
}
