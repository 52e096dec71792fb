//! A send that does not go through the runtime's driver. Runs on the worker that owns the
//! socket.

use std::os::fd::{AsRawFd, RawFd};

/// The descriptor of a TCP socket, kept beside the socket's write half (which owns it) for
/// [`SendNow::send`]. It must not outlive that half: once the socket is closed its number may
/// name another connection. So it is neither `Clone` nor `Copy`.
#[derive(Debug)]
pub struct SendNow(RawFd);

impl SendNow {
    /// The descriptor of `socket`.
    pub fn of(socket: &impl AsRawFd) -> Self {
        Self(socket.as_raw_fd())
    }

    /// Sends what the socket takes of `bytes` now: one `send(MSG_DONTWAIT | MSG_NOSIGNAL)`
    /// system call, outside the driver, so no ring operation, no completion and no wake-up of
    /// the calling task. Returns how many bytes went, 0 when the socket's buffer is full. The
    /// caller must have no other write in flight on the socket (bytes would go out of order).
    #[allow(unsafe_code)]
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<usize> {
        // SAFETY: `send` reads at most `bytes.len()` bytes of a live slice; a descriptor that
        // is not an open socket is reported as an error.
        let sent = unsafe {
            libc::send(
                self.0,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(sent) {
            Ok(sent) => Ok(sent),
            Err(_) => {
                let error = std::io::Error::last_os_error();
                match error.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SendNow;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn sends_what_fits_then_reports_a_full_socket_as_zero() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let direct = SendNow::of(&a);
        assert_eq!(direct.send(b"hello").unwrap(), 5);
        let mut got = [0u8; 5];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        // Nobody reads: the socket fills, and a full socket is 0 bytes sent, not an error.
        let chunk = vec![7u8; 64 * 1024];
        let full = (0..10_000).any(|_| direct.send(&chunk).unwrap() == 0);
        assert!(full, "the socket never filled");
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let error = SendNow::of(&a).send(b"late").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
