//! A filter's stdout and stderr: captured during a call, taken and logged
//! after it.
//!
//! The cap is per call, so a filter that prints on every call keeps
//! working however long its instance lives; what a call writes past the
//! cap is dropped and counted, never refused (a refused write makes Rust's
//! `println!` panic, which would fail the call).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of one stream kept per call.
pub(crate) const CALL_OUTPUT_CAP: usize = 64 * 1024;
/// What the guest may write at once (the stream is always ready).
const WRITE_PERMIT: usize = 64 * 1024;

/// One output stream of one instance; clones share the buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedOutput(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl CapturedOutput {
    fn append(&self, bytes: &[u8]) {
        let mut captured = self.0.lock().expect("output lock is never held across a panic");
        let kept = bytes.len().min(CALL_OUTPUT_CAP.saturating_sub(captured.kept.len()));
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped = captured.dropped.saturating_add(bytes.len() - kept);
    }

    /// Takes what was written since the last take: the bytes kept and how
    /// many past the cap were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, usize) {
        let mut captured = self.0.lock().expect("output lock is never held across a panic");
        let dropped = std::mem::take(&mut captured.dropped);
        (std::mem::take(&mut captured.kept), dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_take_and_what_passes_it_is_counted() {
        let output = CapturedOutput::default();
        let mut stream = output.p2_stream();
        for _ in 0..3 {
            stream.write(Bytes::from(vec![b'x'; CALL_OUTPUT_CAP - 10])).unwrap();
            stream.write(Bytes::from_static(b"0123456789abc")).unwrap();
            assert!(stream.check_write().unwrap() > 0, "a full capture still takes writes");
            let (kept, dropped) = output.take();
            assert_eq!((kept.len(), dropped), (CALL_OUTPUT_CAP, 3));
            assert!(kept.ends_with(b"0123456789"));
        }
        assert_eq!(output.take(), (Vec::new(), 0));
    }
}
