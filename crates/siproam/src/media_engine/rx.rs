//! Batched receive: several datagrams of one socket per system call
//! (`recvmmsg` on Linux). A batch shorter than [`BATCH`] means the socket's
//! queue is empty, so draining an edge-triggered socket costs no extra call
//! that only says "nothing more".

use std::io;
use std::net::SocketAddr;

/// Datagrams taken per call at most.
pub(crate) const BATCH: usize = 8;
/// The largest datagram kept whole (longer ones arrive truncated).
pub(crate) const BUF: usize = 2048;

/// The receive buffers of an engine thread.
pub(crate) struct RxBatch {
    bufs: Box<[[u8; BUF]; BATCH]>,
    lens: [usize; BATCH],
    froms: [Option<SocketAddr>; BATCH],
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl std::fmt::Debug for RxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxBatch").field("lens", &self.lens).finish()
    }
}

impl RxBatch {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        RxBatch {
            bufs: Box::new([[0u8; BUF]; BATCH]),
            lens: [0; BATCH],
            froms: [None; BATCH],
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Receives up to [`BATCH`] datagrams from `socket`; `WouldBlock` when
    /// there was none.
    #[cfg(target_os = "linux")]
    pub(crate) fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use nix::sys::socket::{recvmmsg, MsgFlags};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let mut slices = self.bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for ((r, len), from) in results.zip(self.lens.iter_mut()).zip(self.froms.iter_mut()) {
            *len = r.bytes.min(BUF);
            *from = r.address.and_then(|a: nix::sys::socket::SockaddrStorage| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(SocketAddr::V4((*v4).into()))
                } else {
                    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
                }
            });
            n += 1;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Receives up to [`BATCH`] datagrams from `socket`, one call each;
    /// `WouldBlock` when there was none.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let mut n = 0;
        for ((buf, len), from) in self
            .bufs
            .iter_mut()
            .zip(self.lens.iter_mut())
            .zip(self.froms.iter_mut())
        {
            match socket.recv_from(buf) {
                Ok((got, addr)) => {
                    *len = got;
                    *from = Some(addr);
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its bytes (to change
    /// in place) and its source; `None` when it had no usable source.
    pub(crate) fn datagram(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let len = *self.lens.get(i)?;
        let from = (*self.froms.get(i)?)?;
        let buf = self.bufs.get_mut(i)?.get_mut(..len)?;
        Some((buf, from))
    }
}
