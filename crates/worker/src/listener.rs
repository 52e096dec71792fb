//! Data-plane listening sockets: one `SO_REUSEPORT` socket per worker on one address, bound and
//! listening on the starting thread (the caller of [`reserve`]) before any worker runs; each
//! worker then takes its socket over.
//!
//! `SO_REUSEPORT` lets a second process bind a taken port silently and steal traffic, so the
//! address is first probed with a plain bind (which fails on any listening socket, reuse-port or
//! not); the probe also resolves port 0 to the one port every worker uses. The probe stays bound
//! until every worker's socket listens: a bound socket keeps the port from every other bind
//! without `SO_REUSEADDR` and from ephemeral (port 0) binds, so no other process can take the
//! resolved port between the check and the listeners.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of each worker's socket.
const BACKLOG: i32 = 4096;

/// An address held for the workers: one listening `SO_REUSEPORT` socket per worker.
#[derive(Debug)]
pub struct Reservation {
    addr: SocketAddr,
    listeners: Vec<TcpListener>,
}

impl Reservation {
    /// The address every socket listens on (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening sockets, one per worker (non-blocking, `TCP_NODELAY`).
    pub fn into_listeners(self) -> Vec<TcpListener> {
        self.listeners
    }
}

/// Checks that `addr` is free and binds `workers` listening sockets on it (port 0 resolved to
/// one concrete port); fails with [`io::ErrorKind::AddrInUse`] when anything listens there.
pub fn reserve(addr: SocketAddr, workers: usize) -> io::Result<Reservation> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR ignores TIME_WAIT leftovers but still fails on any listening socket; it also
    // lets the workers' sockets bind beside the probe, which never listens.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                "address already in use by another process (or another Fulcrum)",
            )
        } else {
            e
        }
    })?;
    let addr =
        probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet address"))?;
    let listeners = (0..workers).map(|_| bind_worker(addr)).collect::<io::Result<_>>()?;
    drop(probe);
    Ok(Reservation { addr, listeners })
}

/// Binds one worker's listener on the probed address with `SO_REUSEPORT`.
fn bind_worker(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_port_is_refused_and_port_zero_resolves() {
        let held = reserve("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = held.addr();
        assert_ne!(addr.port(), 0);
        let listeners = held.into_listeners();
        assert_eq!(listeners.len(), 2);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
        let err = reserve(addr, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_reserved_port_stays_taken_until_the_workers_take_their_sockets() {
        let held = reserve("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        // Another process binding the port in the meantime (std sets SO_REUSEADDR) is refused,
        // and a client can already connect: the backlog holds it until a worker accepts.
        let err = TcpListener::bind(held.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let _client = std::net::TcpStream::connect(held.addr()).unwrap();
    }
}
