//! The pod webhook's side of `--tag-drift` (`serve/drift.rs` reads and
//! decides): which admitted images are looked at, and what is done about a
//! drifted tag (a warning, a log line, the metric, and under `sync` one
//! copy Job per new source digest, within the copy-Job caps).

use futures_util::{stream, StreamExt};

use super::{Pods, LOOKUP_CONCURRENCY};
use crate::image::ImageRef;
use crate::mutate::pods::{Candidate, Presence};
use crate::serve::drift::{self, Done, Drifted};
use crate::serve::jobs::job_name;

impl Pods {
    /// Checks the admitted tags that are in the mirror for drift and acts on
    /// it; returns the admission warnings.
    pub(super) async fn follow_tags(
        &self,
        found: &[Candidate],
        presence: impl Fn(&ImageRef) -> Presence,
        namespace: &str,
    ) -> Vec<String> {
        let Some(drifts) = &self.drifts else {
            return Vec::new();
        };
        let mut checks = Vec::new();
        for c in found {
            if presence(&c.target) != Presence::Present || !drift::followed(&c.source, &c.target) {
                continue;
            }
            let (drifts, source, target) = (drifts.clone(), c.source.clone(), c.target.clone());
            checks.push(async move {
                let drifted = drifts.check(&source, &target).await;
                drifted.map(|d| (source, target, d))
            });
        }
        let drifted: Vec<(ImageRef, ImageRef, Drifted)> = stream::iter(checks)
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .filter_map(|found| async move { found })
            .collect()
            .await;
        let mut warnings = Vec::new();
        for (source, target, drifted) in drifted {
            let done = drifts.done();
            if done == Done::Synced && !self.settings.dry_run {
                self.sync_tag(&source, &target, &drifted.now, namespace)
                    .await;
            }
            self.metrics.tag_drifted(done.label());
            tracing::warn!(
                image = %source, target = %target, mirror = %drifted.mirror, now = %drifted.now,
                done = done.label(), "a mirrored tag drifted from its source"
            );
            warnings.push(drift::warning(&source, &target, &drifted, done));
        }
        warnings
    }

    /// Starts (within the caps) the copy Job that moves `target`'s tag to
    /// `now`, what `source`'s tag points at.
    pub(super) async fn sync_tag(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        now: &str,
        namespace: &str,
    ) {
        let (source, target) = drift::sync_copy(source, target, now);
        // Pinned: every platform (`for_copy` of a pinned source is empty).
        let name = job_name(&source, &target, &[]);
        // One Job per build: a finished one (the tag moved, was left because
        // the source moved on again, or refused, IMMUTABLE) is not run again.
        if self.gate.has_run(&name) {
            tracing::debug!(job = %name, "the copy Job for this build has run");
            return;
        }
        if !self.gate.copy_fits(namespace, &name) {
            return;
        }
        if let Err(err) = Box::pin(self.gate.ensure_copy(&source, &target, &[], namespace)).await {
            tracing::warn!(image = %source, target = %target, error = %err, "the copy Job that moves a drifted tag was not started");
        }
    }
}
