//! The bytes of one blob on their way from source to target: counted for
//! progress, hashed, and cut short when they are not what the manifest says.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::Stream;
use oci_client::errors::{DigestError, OciDistributionError};
use sha2::{Digest as _, Sha256};

use super::observe::BlobObserver;
use super::retry::SourceFault;
use crate::manifest::{finish_digest, Descriptor};

/// The source stream on its way to the target: counts bytes for progress,
/// hashes them, and withholds the last chunk unless the digest matches, so
/// the upload's Content-Length is never reached with wrong bytes and the
/// registry cannot commit them. It also remembers *why* the source failed
/// (digest or I/O), which the push side would only see as a broken body.
pub struct Counted<S> {
    inner: S,
    progress: Arc<Mutex<Box<dyn BlobObserver>>>,
    fault: Arc<Mutex<Option<SourceFault>>>,
    hasher: Option<Sha256>,
    expected: String,
    sent: u64,
    size: u64,
}

impl<S> Counted<S> {
    /// Wraps a source stream for `blob`.
    pub fn new(
        inner: S,
        blob: &Descriptor,
        progress: Arc<Mutex<Box<dyn BlobObserver>>>,
        fault: Arc<Mutex<Option<SourceFault>>>,
    ) -> Self {
        let hasher = blob.digest.starts_with("sha256:").then(Sha256::new);
        Self {
            inner,
            progress,
            fault,
            hasher,
            expected: blob.digest.clone(),
            sent: 0,
            size: blob.size,
        }
    }

    fn fail(&mut self, fault: SourceFault) -> Poll<Option<oci_client::errors::Result<Bytes>>> {
        let message = fault.to_string();
        *self.fault.lock().expect("fault lock") = Some(fault);
        Poll::Ready(Some(Err(OciDistributionError::IoError(
            std::io::Error::other(message),
        ))))
    }

    /// Checks a chunk before it leaves; `Err` holds the fault to report.
    fn admit(&mut self, chunk: &[u8]) -> std::result::Result<(), SourceFault> {
        self.sent += chunk.len() as u64;
        if self.sent > self.size {
            return Err(SourceFault::Digest(format!(
                "source sent more than the {} bytes the manifest declares",
                self.size
            )));
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(chunk);
            if self.sent == self.size {
                let actual = finish_digest(self.hasher.take().expect("hasher present"));
                if actual != self.expected {
                    return Err(SourceFault::Digest(format!(
                        "expected {}, got {actual}",
                        self.expected
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = oci_client::errors::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.admit(&chunk) {
                Ok(()) => {
                    self.progress
                        .lock()
                        .expect("progress lock")
                        .inc(chunk.len() as u64);
                    Poll::Ready(Some(Ok(chunk)))
                }
                Err(fault) => self.fail(fault),
            },
            Poll::Ready(Some(Err(err))) => {
                let fault = match err.get_ref().and_then(|e| e.downcast_ref::<DigestError>()) {
                    Some(digest) => SourceFault::Digest(digest.to_string()),
                    None => SourceFault::Io(err.to_string()),
                };
                self.fail(fault)
            }
            Poll::Ready(None) if self.sent < self.size => {
                let (sent, size) = (self.sent, self.size);
                self.fail(SourceFault::Io(format!(
                    "source ended after {sent} of {size} bytes"
                )))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
