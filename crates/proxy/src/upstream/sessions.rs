//! What the two HTTP/2 engines' pools of upstream sessions (one worker, one backend) share:
//! the list of sessions, the one connect in flight that other callers wait for, retirement,
//! and each session's count of stream slots handed out with the time it became idle. Which
//! session a call gets, and what it does when all are full, is each pool's own
//! (`super::h2::SessionPool`, `super::h2n::NativePool`). Runs on the worker's thread.

use std::cell::{Cell, RefCell, RefMut};
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use fulcrum_util::{Notified, Notify};

use super::LeaseError;

/// One multiplexed upstream connection, as its pool sees it.
pub(super) trait PooledSession {
    /// Its stream slots, idle clock and kill switch.
    fn slots(&self) -> &Slots;
    /// Whether it takes no new stream (GOAWAY, an error, closed).
    fn is_closing(&self) -> bool;
    /// Stops it taking new streams (the backend was retired); those in flight finish.
    fn close(&self);
}

/// A session's stream slots handed out and not given back, since when it has had none, and
/// what closes it at once.
#[derive(Debug)]
pub(super) struct Slots {
    /// Stream slots handed out and not given back.
    pub(super) leases: Cell<usize>,
    /// When the last slot was given back (or the session opened).
    pub(super) idle_since: Cell<Instant>,
    /// Closes the connection at once (the backend was retired, or the session is idle).
    pub(super) kill: Notify,
}

impl Slots {
    /// No slot handed out yet: idle from now.
    pub(super) fn new() -> Slots {
        Slots {
            leases: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            kill: Notify::default(),
        }
    }

    /// Hands out a slot.
    pub(super) fn take(&self) {
        self.leases.set(self.leases.get() + 1);
    }

    /// Gives a slot back (the session idles from now when it was the last).
    pub(super) fn give_back(&self) {
        self.leases.set(self.leases.get().saturating_sub(1));
        if self.leases.get() == 0 {
            self.idle_since.set(Instant::now());
        }
    }
}

/// The sessions of one worker to one backend.
#[derive(Debug)]
pub(super) struct Sessions<S> {
    list: RefCell<Vec<Rc<S>>>,
    connecting: Cell<bool>,
    connected: Notify,
    retired: Cell<bool>,
}

impl<S> Default for Sessions<S> {
    fn default() -> Self {
        Sessions {
            list: RefCell::new(Vec::new()),
            connecting: Cell::new(false),
            connected: Notify::default(),
            retired: Cell::new(false),
        }
    }
}

impl<S: PooledSession> Sessions<S> {
    /// `Err(Retired)` once the backend was removed from the configuration.
    pub(super) fn check_retired<E>(&self) -> Result<(), LeaseError<E>> {
        if self.retired.get() { Err(LeaseError::Retired) } else { Ok(()) }
    }

    /// The sessions that take new streams (those closing are dropped from the pool first).
    /// Not to be held across an await.
    pub(super) fn open(&self) -> RefMut<'_, Vec<Rc<S>>> {
        let mut list = self.list.borrow_mut();
        list.retain(|s| !s.is_closing());
        list
    }

    /// Whether a connect is in flight.
    pub(super) fn is_connecting(&self) -> bool {
        self.connecting.get()
    }

    /// Resolves when the connect in flight has ended.
    pub(super) fn connected(&self) -> Notified<'_> {
        self.connected.notified()
    }

    /// Opens a session with `connect`, the one connect in flight (callers that find one wait
    /// for it with [`Sessions::connected`]), and adds it to the pool unless the backend was
    /// retired meanwhile.
    pub(super) async fn connect<E>(
        &self,
        connect: impl Future<Output = Result<Rc<S>, E>>,
    ) -> Result<Rc<S>, LeaseError<E>> {
        self.connecting.set(true);
        let result = connect.await;
        self.connecting.set(false);
        self.connected.notify();
        let session = result.map_err(LeaseError::Connect)?;
        if self.retired.get() {
            session.slots().kill.notify();
            return Err(LeaseError::Retired);
        }
        self.list.borrow_mut().push(session.clone());
        Ok(session)
    }

    /// Closes every idle session and stops pooling (the backend was removed). Sessions with
    /// streams in flight finish them.
    pub(super) fn retire(&self) {
        self.retired.set(true);
        for s in self.list.take() {
            s.close();
            if s.slots().leases.get() == 0 {
                s.slots().kill.notify();
            }
        }
    }
}
