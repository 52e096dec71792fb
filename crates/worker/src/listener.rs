//! Data-plane listening sockets: one `SO_REUSEPORT` socket per worker on one address.
//!
//! `SO_REUSEPORT` lets a second process bind a taken port silently and steal traffic, so the
//! address is first probed with a plain bind (which fails on any existing socket, reuse-port or
//! not); the probe also resolves port 0 to the one port every worker then binds.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of each worker's socket.
const BACKLOG: i32 = 4096;

/// Checks that `addr` is free and returns it with port 0 resolved to a concrete port.
pub fn reserve(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR ignores TIME_WAIT leftovers but still fails on any listening socket.
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
    let local =
        probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet address"))?;
    Ok(local)
}

/// Binds one worker's listener on the reserved address with `SO_REUSEPORT`.
pub fn bind_worker(addr: SocketAddr) -> io::Result<TcpListener> {
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
        let addr = reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        let first = bind_worker(addr).unwrap();
        let second = bind_worker(addr).unwrap();
        assert_eq!(first.local_addr().unwrap(), second.local_addr().unwrap());
        let err = reserve(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
