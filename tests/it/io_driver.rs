//! The io driver: every worker runs the driver it was asked for and says which in its log and
//! in `/metrics`; when io_uring is denied (a seccomp filter, as Docker's default profile has),
//! the workers fall back to epoll, say why in a warning, and serve as before.

use crate::harness::*;

const WORKERS: usize = 2;

/// The `driver=` of each worker's `worker started` line, in worker order.
fn worker_drivers(f: &Fulcrum) -> Vec<String> {
    (0..WORKERS)
        .map(|w| {
            let line = f.wait_log(&format!("msg=\"worker started\" worker={w} "));
            log_field(&line, "driver").unwrap_or_else(|| panic!("no driver= in {line:?}"))
        })
        .collect()
}

/// The drivers `/metrics` reports, in worker order.
fn metric_drivers(f: &Fulcrum) -> Vec<String> {
    let m = f.metrics();
    (0..WORKERS)
        .map(|w| {
            let series = m.series(&format!("fulcrum_io_driver{{worker=\"{w}\","));
            assert_eq!(series.len(), 1, "worker {w}: {series:?}");
            let label = series[0].split("driver=\"").nth(1).and_then(|r| r.split('"').next());
            label.unwrap_or_else(|| panic!("no driver label: {}", series[0])).to_owned()
        })
        .collect()
}

#[test]
fn each_worker_runs_the_driver_it_was_asked_for_and_says_so() {
    let backend = TestBackend::named("b");
    for driver in ["epoll", "io_uring"] {
        let f = Fulcrum::builder().io_driver(driver).backend(&backend).start();
        let want = vec![driver.to_owned(); WORKERS];
        assert_eq!(worker_drivers(&f), want, "{driver}:\n{}", f.log_text());
        assert_eq!(metric_drivers(&f), want, "{driver}");
        assert!(!f.log_text().contains("falling back"), "{driver}:\n{}", f.log_text());
        assert_eq!(f.get("/").status(), 200, "{driver}");
    }
}

#[test]
fn with_io_uring_denied_the_workers_fall_back_to_epoll_and_say_why() {
    let backend = TestBackend::named("b");
    for asked in ["auto", "io_uring"] {
        let f = Fulcrum::builder().io_driver(asked).deny_io_uring().backend(&backend).start();
        assert_eq!(worker_drivers(&f), vec!["epoll"; WORKERS], "{asked}:\n{}", f.log_text());
        assert_eq!(metric_drivers(&f), vec!["epoll"; WORKERS], "{asked}");
        let warning = f.wait_log("msg=\"io_uring unavailable, falling back to epoll\"");
        assert!(warning.contains("level=warn"), "{warning}");
        let reason = log_field(&warning, "reason").unwrap_or_default();
        assert!(!reason.is_empty(), "no reason given: {warning}");
        assert_eq!(f.get("/").status(), 200, "{asked}");
    }
    // The control: without the filter, `auto` gets io_uring on this machine.
    let f = Fulcrum::builder().io_driver("auto").backend(&backend).start();
    assert_eq!(worker_drivers(&f), vec!["io_uring"; WORKERS], "{}", f.log_text());
}
