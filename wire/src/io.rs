//! Adapts glommio sockets (futures-io traits) to hyper's I/O traits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Bytes read from the socket per call, at most.
const READ_CHUNK_BYTES: usize = 16 * 1024;

pub(crate) struct HyperIo<T> {
    io: T,
    /// Initialised once per connection: hyper offers uninitialised room,
    /// and zero-filling all of it on every poll (most of which return
    /// Pending) cost more than the reads themselves.
    scratch: Box<[u8]>,
}

impl<T> HyperIo<T> {
    pub(crate) fn new(io: T) -> Self {
        HyperIo {
            io,
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_CHUNK_BYTES);
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, &mut this.scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&this.scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
