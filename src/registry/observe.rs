//! How a copy reports its progress without knowing who listens: the caller
//! passes an observer (terminal bars, log lines, nothing at all in tests).

/// Watches one image copy; shared by every blob task of that copy.
pub trait CopyObserver: Send + Sync {
    /// The bytes this copy has to move (all its blobs, present ones included).
    fn set_total(&self, bytes: u64);
    /// A blob transfer starts.
    fn blob(&self, digest: &str, size: u64) -> Box<dyn BlobObserver>;
    /// A blob needed no transfer: `how` is `present` or `mounted`.
    fn blob_skipped(&self, digest: &str, size: u64, how: &str);
}

/// Watches one blob transfer.
pub trait BlobObserver: Send {
    /// Bytes moved.
    fn inc(&mut self, bytes: u64);
    /// A retry starts over: what this attempt counted is taken back.
    fn restart(&mut self);
    /// The blob landed.
    fn finish(self: Box<Self>);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl CopyObserver for Unobserved {
    fn set_total(&self, _bytes: u64) {}
    fn blob(&self, _digest: &str, _size: u64) -> Box<dyn BlobObserver> {
        Box::new(Unobserved)
    }
    fn blob_skipped(&self, _digest: &str, _size: u64, _how: &str) {}
}

impl BlobObserver for Unobserved {
    fn inc(&mut self, _bytes: u64) {}
    fn restart(&mut self) {}
    fn finish(self: Box<Self>) {}
}
