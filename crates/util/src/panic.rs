//! Panic containment for tasks on a worker: monoio does not catch panics in tasks, so one
//! panicking connection would unwind the whole worker thread and every connection on it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls the inner future inside `catch_unwind`, each poll one [`Turn`](crate::Turn) of the
/// clock; resolves to `Err(message)` if it panicked.
///
/// The future comes boxed: the task (or the entry of a set of futures) that runs this then stays
/// small, and spawning it copies a pointer rather than the (several KiB) state of a connection
/// or stream.
#[derive(Debug)]
pub struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    /// Wraps `fut`.
    pub fn new(fut: Pin<Box<F>>) -> Self {
        Self(fut)
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // One poll is one turn of the worker's clock (`crate::now`).
        let _turn = crate::Turn::begin();
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()))),
        }
    }
}

/// Spawns `fut` on the current thread's runtime inside [`CatchUnwind`], so a panic in it loses
/// only that task; `on_panic` then gets the panic's message (to log it, and to settle whatever
/// the task left behind). monoio does not catch panics in tasks: one would unwind the whole
/// worker and every connection on it.
pub fn spawn_contained<F: Future<Output = ()> + 'static>(
    fut: Pin<Box<F>>,
    on_panic: impl FnOnce(String) + 'static,
) {
    monoio::spawn(async move {
        if let Err(panic) = CatchUnwind::new(fut).await {
            on_panic(panic);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_does_not_take_the_runtime_down() {
        let mut rt =
            crate::runtime::build_runtime(crate::runtime::IoDriverChoice::Auto).unwrap().runtime;
        let survived = rt.block_on(async {
            let panicked = CatchUnwind::new(Box::pin(async { panic!("boom") })).await;
            assert_eq!(panicked, Err("boom".to_owned()));
            // The runtime (and its other tasks) keep running after the contained panic.
            monoio::spawn(async { 42 }).await
        });
        assert_eq!(survived, 42);
    }

    #[test]
    fn a_contained_spawn_hands_the_panic_to_its_callback() {
        let mut rt =
            crate::runtime::build_runtime(crate::runtime::IoDriverChoice::Auto).unwrap().runtime;
        let reported = rt.block_on(async {
            let reported = std::rc::Rc::new(std::cell::RefCell::new(None));
            let called = std::rc::Rc::new(crate::Notify::default());
            let (to, signal) = (reported.clone(), called.clone());
            let report = called.notified();
            spawn_contained(Box::pin(async { panic!("driver bug") }), move |m| {
                *to.borrow_mut() = Some(m);
                signal.notify();
            });
            // The spawned task runs (and panics) while this one waits for the callback; bounded.
            let _ = monoio::time::timeout(std::time::Duration::from_secs(5), report).await;
            reported.take()
        });
        assert_eq!(reported.as_deref(), Some("driver bug"));
    }
}
