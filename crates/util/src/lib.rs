//! Fulcrum's bottom layer: what every other layer may use and that knows nothing of HTTP,
//! backends or configuration.
//!
//! - [`clock`]: the process-wide monotonic millisecond clock.
//! - [`buf`]: [`ReadBuf`], a fixed-capacity read buffer over monoio's owned-buffer IO.
//! - [`digits`]: numbers written into byte buffers without `core::fmt`.
//! - [`gather`]: [`Gather`], two owned buffers written in one `writev` without a copy.
//! - [`notify`]: a single-threaded notification for tasks of one worker, and [`yield_now`].
//! - [`deadline`]: when a worker's upkeep (its ticker) must run next.
//! - [`rewind`]: a poll-io socket that replays bytes already read (protocol hand-over).
//! - [`panic`]: panic containment for worker tasks.
//! - [`timer`]: [`Timer`], one timer entry for every bounded wait of a connection in turn.
//! - [`alarms`]: [`Alarms`], one timer entry for the concurrent waits of a connection's streams.
//! - [`sock`]: [`SendNow`], a send that does not go through the runtime's driver.
//! - [`runtime`]: building a worker's runtime (io_uring, or epoll as a reported fallback).

mod alarms;
mod buf;
mod clock;
mod deadline;
mod digits;
mod gather;
mod notify;
mod panic;
mod rewind;
mod runtime;
mod sock;
mod timer;

pub use alarms::{Alarm, Alarms};
pub use buf::ReadBuf;
pub use clock::{Turn, ms_at, now, now_ms};
pub use deadline::Deadline;
pub use digits::{push_decimal, push_hex};
pub use gather::{Gather, write_all_gathered};
pub use notify::{Event, EventWait, Notified, Notify, yield_now};
pub use panic::{CatchUnwind, spawn_contained};
pub use rewind::Rewind;
pub use runtime::{Built, IoDriver, IoDriverChoice, WorkerRuntime, build_runtime};
pub use sock::SendNow;
pub use timer::{Elapsed, Timer, Within};

/// Runs `fut` to its end on a runtime of its own (epoll, timer enabled): the unit tests' way to
/// drive what needs a worker's runtime.
#[cfg(test)]
fn run_on_test_runtime<F: std::future::Future>(fut: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map(|mut rt| rt.block_on(fut))
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}
