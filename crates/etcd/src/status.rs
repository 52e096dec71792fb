//! Connection status shared between the client, its watches and whoever shows it (the admin
//! API on `lb-admin`): written on `lb-store`, read from any thread with atomics and one short
//! lock that is never held across an await.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use crate::error::Error;

/// A cheap, cloneable, thread-safe view of the client's connection status.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    watching: AtomicBool,
    watch_revision: AtomicI64,
    reconnects: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    contact: Option<Instant>,
    error: Option<(Error, SystemTime)>,
}

/// A copy of the status at one moment.
#[derive(Debug, Clone)]
pub struct Status {
    /// The latest exchange with etcd (call, watch message or probe) succeeded.
    pub connected: bool,
    /// A watch stream is established.
    pub watching: bool,
    /// The revision the watch resumes from (one past the last one it delivered or verified).
    pub watch_revision: i64,
    /// Watch streams re-established after a failure.
    pub reconnects: u64,
    /// When etcd last answered.
    pub last_contact: Option<Instant>,
    /// The latest error and when it happened (kept after recovery, for operators).
    pub last_error: Option<(Error, SystemTime)>,
}

impl StatusHandle {
    /// The current status.
    pub fn get(&self) -> Status {
        let i = &self.inner;
        let last = i.last.lock().unwrap_or_else(PoisonError::into_inner);
        Status {
            connected: i.connected.load(Ordering::Relaxed),
            watching: i.watching.load(Ordering::Relaxed),
            watch_revision: i.watch_revision.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
            last_contact: last.contact,
            last_error: last.error.clone(),
        }
    }

    pub(crate) fn contact(&self) {
        self.inner.connected.store(true, Ordering::Relaxed);
        self.inner.last.lock().unwrap_or_else(PoisonError::into_inner).contact =
            Some(Instant::now());
    }

    /// Records a failure; `reachable` says whether etcd itself answered (a refusal) or not.
    pub(crate) fn failed(&self, error: &Error, reachable: bool) {
        if reachable {
            self.contact();
        } else {
            self.inner.connected.store(false, Ordering::Relaxed);
        }
        self.inner.last.lock().unwrap_or_else(PoisonError::into_inner).error =
            Some((error.clone(), SystemTime::now()));
    }

    pub(crate) fn set_watching(&self, watching: bool) {
        self.inner.watching.store(watching, Ordering::Relaxed);
    }

    pub(crate) fn set_watch_revision(&self, revision: i64) {
        self.inner.watch_revision.store(revision, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}
