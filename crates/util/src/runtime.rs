//! Building a worker's monoio runtime: io_uring when the kernel and seccomp allow it, epoll
//! otherwise. monoio's own fallback is silent, so the choice is made (and reported) here.

use std::fmt;

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use std::str::FromStr;

/// Which io driver to run (`io_driver` in the configuration, `--io-driver` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriverChoice {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring, falling back to epoll (with a warning) when it is denied.
    IoUring,
    /// epoll only.
    Epoll,
}

impl IoDriverChoice {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::IoUring => "io_uring",
            Self::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoDriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoDriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" => Ok(Self::IoUring),
            "epoll" => Ok(Self::Epoll),
            other => Err(format!("unknown io driver `{other}` (expected auto, io_uring or epoll)")),
        }
    }
}

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

/// A built runtime, the driver it runs, and why io_uring was not used when it was wanted but
/// refused (the caller logs it: monoio's own fallback is silent).
pub struct Built {
    /// The runtime.
    pub runtime: WorkerRuntime,
    /// The driver it runs.
    pub driver: IoDriver,
    /// Why the runtime fell back to epoll, when io_uring was wanted.
    pub fallback: Option<String>,
}

/// Builds a runtime for the chosen driver, falling back to epoll when io_uring is unavailable.
pub fn build_runtime(choice: IoDriverChoice) -> std::io::Result<Built> {
    if choice != IoDriverChoice::Epoll {
        let reason = if monoio::utils::detect_uring() {
            // Tuned ring first (kernel 6.0+); a kernel that refuses the flags gets a plain ring.
            match uring_runtime(true).or_else(|_| uring_runtime(false)) {
                Ok(rt) => {
                    return Ok(Built {
                        runtime: rt.into(),
                        driver: IoDriver::IoUring,
                        fallback: None,
                    });
                }
                Err(e) => e.to_string(),
            }
        } else {
            "io_uring is not available (old kernel, or denied by seccomp)".to_owned()
        };
        let rt = epoll_runtime()?;
        return Ok(Built { runtime: rt.into(), driver: IoDriver::Epoll, fallback: Some(reason) });
    }
    Ok(Built { runtime: epoll_runtime()?.into(), driver: IoDriver::Epoll, fallback: None })
}

fn epoll_runtime() -> std::io::Result<monoio::Runtime<TimeDriver<LegacyDriver>>> {
    RuntimeBuilder::<LegacyDriver>::new().with_entries(URING_ENTRIES).enable_timer().build()
}
