//! Progress of image copies: indicatif bars on a terminal (one per image,
//! one per blob in flight, bytes and rate), plain log lines elsewhere. The
//! sync-image room's observer of the registry edge's copies.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::registry::copy::Copied;
use crate::registry::observe::{BlobObserver, CopyObserver};

/// Where progress goes: bars, or log lines.
#[derive(Clone)]
pub struct Reporter {
    bars: Option<MultiProgress>,
}

impl Reporter {
    /// Bars when `bars` is true (the caller decides from the terminal), log lines otherwise.
    pub fn new(bars: bool) -> Self {
        Self {
            bars: bars
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))),
        }
    }

    /// Starts reporting one image copy.
    pub fn image(&self, source: &str) -> ImageProgress {
        let bar = self.bars.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{spinner:.green} {msg:40!} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {elapsed:>4}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(source.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        ImageProgress {
            source: source.to_string(),
            bars: self.bars.clone(),
            bar,
            started: Instant::now(),
        }
    }
}

/// Progress of one image (cheap to clone into blob tasks).
#[derive(Clone)]
pub struct ImageProgress {
    source: String,
    bars: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl CopyObserver for ImageProgress {
    fn set_total(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
    }

    fn blob(&self, digest: &str, size: u64) -> Box<dyn BlobObserver> {
        let bar = self.bars.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "    {msg:38!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_message(short_digest(digest));
            bar
        });
        Box::new(BlobProgress {
            digest: digest.to_string(),
            size,
            bar,
            image_bar: self.bar.clone(),
            sent: 0,
            started: Instant::now(),
        })
    }

    fn blob_skipped(&self, digest: &str, size: u64, how: &str) {
        if let Some(bar) = &self.bar {
            bar.inc(size);
        } else {
            tracing::info!(image = %self.source, blob = %digest, size, how, "blob already in target");
        }
    }
}

impl ImageProgress {
    /// The image is done: `copied` says what moved, `None` means it was already there.
    pub fn finish(&self, target: &str, digest: &str, copied: Option<&Copied>) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!(
                    "{} {}",
                    self.source,
                    if copied.is_none() {
                        "(up to date)"
                    } else {
                        "done"
                    }
                ));
                bar.finish();
            }
            None => tracing::info!(
                image = %self.source, target, digest,
                unchanged = copied.is_none(),
                blobs_copied = copied.map_or(0, |c| c.blobs_copied),
                blobs_skipped = copied.map_or(0, |c| c.blobs_skipped),
                bytes_copied = copied.map_or(0, |c| c.bytes_copied),
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "image mirrored"
            ),
        }
    }

    /// The image failed: clear its bar so the error line stands alone.
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// Progress of one blob transfer.
struct BlobProgress {
    digest: String,
    size: u64,
    bar: Option<ProgressBar>,
    image_bar: Option<ProgressBar>,
    sent: u64,
    started: Instant,
}

impl BlobObserver for BlobProgress {
    fn inc(&mut self, bytes: u64) {
        self.sent += bytes;
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        if let Some(bar) = &self.image_bar {
            bar.inc(bytes);
        }
    }

    fn restart(&mut self) {
        if let Some(bar) = &self.image_bar {
            bar.set_position(bar.position().saturating_sub(self.sent));
        }
        if let Some(bar) = &self.bar {
            bar.reset();
        }
        self.sent = 0;
    }

    fn finish(self: Box<Self>) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => tracing::info!(
                blob = %self.digest, size = self.size,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "blob copied"
            ),
        }
    }
}

impl Drop for BlobProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

fn short_digest(digest: &str) -> String {
    digest.chars().take(19).collect()
}
