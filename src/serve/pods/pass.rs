//! The periodic pass of `--tag-drift`: every `--tag-recheck-interval` the
//! pods are listed (in pages), the mirrored tags they run are read off
//! privatize's own records (`serve/drift.rs`: only records that derive), and
//! each tag is checked as at admission (the same cache). A drifted tag gets a
//! `TagDrifted` Event on every pod that runs it (once per pod and source
//! build in this process), the metric once per tag, and under `sync` its copy
//! Job. Bounded: at most `MAX_TAGS` tags per pass, `LOOKUP_CONCURRENCY` at once.

use std::collections::HashSet;

use futures_util::{stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use super::{Pods, LOOKUP_CONCURRENCY};
use crate::image::ImageRef;
use crate::serve::drift::{self, Done, Drifts, PodKey};
use std::sync::Arc;

/// Tags looked at per pass, at most.
const MAX_TAGS: usize = 1024;
/// Pods per list page.
const PAGE: u32 = 500;

impl Pods {
    /// Runs the pass every interval until `shutdown` (nothing under `ignore`).
    pub(super) async fn drift_passes(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(drifts) = self.drifts.clone() else {
            return;
        };
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "privatize".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let mut told: HashSet<(PodKey, String)> = HashSet::new();
        let mut ticker = tokio::time::interval(drifts.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: admissions have just looked.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.drift_pass(&drifts, &recorder, &mut told).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "tag drift pass failed; the next one retries")
                }
            }
        }
    }

    async fn drift_pass(
        &self,
        drifts: &Arc<Drifts>,
        recorder: &Recorder,
        told: &mut HashSet<(PodKey, String)>,
    ) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut pods = Vec::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| anyhow::anyhow!("listing pods: {e}"))?;
            pods.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let in_use = drift::in_use(&pods, &self.settings.target);
        drop(pods);
        // What was told of pods that are gone is forgotten.
        let live: HashSet<&PodKey> = in_use.values().flatten().collect();
        told.retain(|(key, _)| live.contains(key));
        if in_use.len() > MAX_TAGS {
            tracing::warn!(tags = in_use.len(), max = MAX_TAGS, "more mirrored tags in use than one drift pass looks at: the rest wait for the next");
        }
        let mut checks = Vec::new();
        for ((source, target), pods) in in_use.into_iter().take(MAX_TAGS) {
            let (Ok(source), Ok(target)) = (ImageRef::parse(&source), ImageRef::parse(&target))
            else {
                continue;
            };
            let drifts = drifts.clone();
            checks.push(async move {
                let drifted = drifts.check(&source, &target).await;
                drifted.map(|d| (source, target, d, pods))
            });
        }
        let drifted: Vec<_> = stream::iter(checks)
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .filter_map(|found| async move { found })
            .collect()
            .await;
        for (source, target, drifted, pods) in drifted {
            let done = drifts.done();
            if done == Done::Synced && !self.settings.dry_run {
                let namespace = pods.first().map(|(ns, _)| ns.clone()).unwrap_or_default();
                self.sync_tag(&source, &target, &drifted.now, &namespace)
                    .await;
            }
            let note = drift::warning(&source, &target, &drifted, done);
            let mut new = 0;
            for key in pods {
                if !told.insert((key.clone(), drifted.now.clone())) {
                    continue;
                }
                new += 1;
                let (namespace, name) = key;
                let pod = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(namespace),
                    name: Some(name),
                    ..Default::default()
                };
                let event = Event {
                    type_: EventType::Warning,
                    reason: "TagDrifted".into(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "CheckTag".into(),
                    secondary: None,
                };
                if let Err(err) = recorder.publish(&event, &pod).await {
                    tracing::warn!(error = %err, "TagDrifted event not recorded");
                }
            }
            if new > 0 {
                self.metrics.tag_drifted(done.label());
                tracing::warn!(
                    image = %source, target = %target, mirror = %drifted.mirror, now = %drifted.now,
                    done = done.label(), pods = new, "a mirrored tag in use drifted from its source"
                );
            }
        }
        Ok(())
    }
}
