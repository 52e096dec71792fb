//! [`ControlHandle`]: how the rest of the process (the admin API, tests, signal handlers) talks
//! to the control plane. Cloneable; its calls block the caller (never call them on a worker).

use std::sync::Arc;

use crossbeam_channel::{Sender, bounded};
use tokio::sync::{mpsc, watch};

use fulcrum_model::Backend;

use crate::change::{Change, ControlError};
use crate::control::Command;
use crate::shared::Request;
use crate::status::StoreStatus;
use crate::view::{Applied, StateView};

/// A cloneable handle to the control thread (and, with the etcd store, to `lb-store`).
#[derive(Debug, Clone)]
pub struct ControlHandle {
    pub(crate) commands: Sender<Command>,
    /// With the etcd store: admin changes go to `lb-store`, which writes etcd first.
    pub(crate) store: Option<mpsc::Sender<Request>>,
    pub(crate) status: StoreStatus,
    pub(crate) backends: watch::Receiver<Vec<Arc<Backend>>>,
}

impl ControlHandle {
    /// Applies a change; returns once every worker runs the resulting epoch (with the etcd
    /// store: once etcd accepted the change and this instance runs it).
    /// Blocks the caller: call it from the admin thread's blocking pool or a test, never from a
    /// worker or inside an async task.
    #[expect(clippy::disallowed_methods, reason = "blocking on the reply is the contract")]
    pub fn apply(&self, change: Change) -> Result<Applied, ControlError> {
        let (tx, rx) = bounded(1);
        match &self.store {
            None => {
                self.commands
                    .send(Command::Apply(change, tx))
                    .map_err(|_| ControlError::Stopped)?;
            }
            Some(store) => {
                let request = Request { change, reply: tx };
                store.blocking_send(request).map_err(|_| ControlError::Stopped)?;
            }
        }
        rx.recv().map_err(|_| ControlError::Stopped)?
    }

    /// The current configuration with merged per-backend counters. Blocks like `apply`.
    #[expect(clippy::disallowed_methods, reason = "blocking on the reply is the contract")]
    pub fn snapshot(&self) -> Result<StateView, ControlError> {
        let (tx, rx) = bounded(1);
        self.commands.send(Command::Snapshot(tx)).map_err(|_| ControlError::Stopped)?;
        rx.recv().map_err(|_| ControlError::Stopped)
    }

    /// The state store's status (kind, connection, applied and refused revisions, errors),
    /// also its metrics collector. Does not block.
    pub fn store_status(&self) -> &StoreStatus {
        &self.status
    }

    /// The current backends of every pool, updated after every epoch that adds or removes one
    /// (for `lb-health`). The sender closes when the control thread stops.
    pub fn backends(&self) -> watch::Receiver<Vec<Arc<Backend>>> {
        self.backends.clone()
    }

    /// Tells every worker to drain and stop (and `lb-store` to stop); returns at once.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}
