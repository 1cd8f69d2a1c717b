//! The periodic pass over the mirrored tags pods run: every
//! `--tag-recheck-interval` (and, under `--platforms auto`, as soon as a node
//! of a new platform joins) the pods are listed (in pages), the mirrored tags
//! they run are read off privatize's own records (`serve/drift.rs`: only
//! records that derive), and each tag is looked at:
//! - `--tag-drift`: checked as at admission (the same cache). A drifted tag
//!   gets a `TagDrifted` Event on every pod that runs it (once per pod and
//!   source build in this process), the metric once per tag, and under
//!   `sync` its copy Job;
//! - `--platforms auto`: a mirror filtered to fewer platforms than the nodes
//!   now have gets a copy Job of the tag with the platforms it has and the
//!   nodes' (never fewer: a shared mirror keeps every cluster's).
//!
//! Bounded: at most `MAX_TAGS` tags per pass, `LOOKUP_CONCURRENCY` at once.

use std::collections::{BTreeMap, HashSet};

use futures_util::{stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use super::{Pods, LOOKUP_CONCURRENCY};
use crate::image::ImageRef;
use crate::serve::drift::{self, Done, Drifts, PodKey};
use crate::serve::jobs::job_name;
use crate::serve::platforms;
use std::sync::Arc;

/// Tags looked at per pass, at most.
const MAX_TAGS: usize = 1024;
/// Pods per list page.
const PAGE: u32 = 500;

/// The mirrored tags in use: (source, target) → the pods that run it.
type InUse = BTreeMap<(String, String), Vec<PodKey>>;

impl Pods {
    /// Runs the pass every interval, and when a node of a new platform
    /// joins, until `shutdown` (nothing under `--tag-drift ignore` without
    /// `--platforms auto`).
    pub(super) async fn passes(self: Arc<Self>, shutdown: CancellationToken) {
        let drifts = self.drifts.clone();
        let platforms = self.gate.config.platforms.clone();
        if drifts.is_none() && !platforms.auto() {
            return;
        }
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "privatize".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let mut told: HashSet<(PodKey, String)> = HashSet::new();
        let mut ticker = tokio::time::interval(self.recheck_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: admissions have just looked.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                _ = platforms.joined.notified() => {}
            }
            let in_use = match self.in_use().await {
                Ok(in_use) => in_use,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "the pass over mirrored tags in use failed; the next one retries");
                    continue;
                }
            };
            if platforms.auto() {
                self.widen_platforms(&in_use).await;
            }
            if let Some(drifts) = &drifts {
                self.drift_pass(drifts, in_use, &recorder, &mut told).await;
            }
        }
    }

    /// The mirrored tags pods run now, from every pod (listed in pages).
    async fn in_use(&self) -> anyhow::Result<InUse> {
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
        if in_use.len() > MAX_TAGS {
            tracing::warn!(
                tags = in_use.len(),
                max = MAX_TAGS,
                "more mirrored tags in use than one pass looks at: the rest wait for the next"
            );
        }
        Ok(in_use.into_iter().take(MAX_TAGS).collect())
    }

    /// `--platforms auto`: copies again, with the nodes' platforms added,
    /// each tag in use whose mirror was filtered to fewer (within the caps;
    /// one Job per platform set, not run again once it has finished).
    async fn widen_platforms(&self, in_use: &InUse) {
        let nodes = self.gate.config.platforms.nodes();
        if nodes.is_empty() {
            return;
        }
        let mut checks = Vec::new();
        for ((source, target), pods) in in_use {
            let (Ok(source), Ok(target)) = (ImageRef::parse(source), ImageRef::parse(target))
            else {
                continue;
            };
            let namespace = pods.first().map(|(ns, _)| ns.clone()).unwrap_or_default();
            let (checker, nodes) = (self.checker.clone(), nodes.clone());
            checks.push(async move {
                let (_, digest, _) = checker.check_digest(&target).await;
                let facts = checker.index_facts(&target, &digest?).await?;
                // Not filtered: every platform of the source is there.
                facts.filtered_from.as_ref()?;
                if platforms::missing(&nodes, &facts.platforms).is_empty() {
                    return None;
                }
                let wanted = platforms::widened(&nodes, &facts.platforms);
                Some((source, target, wanted, facts.platforms, namespace))
            });
        }
        let narrow: Vec<_> = stream::iter(checks)
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .filter_map(|found| async move { found })
            .collect()
            .await;
        for (source, target, wanted, has, namespace) in narrow {
            let name = job_name(&source, &target, &wanted);
            if self.settings.dry_run
                || self.gate.has_run(&name)
                || !self.gate.copy_fits(&namespace, &name)
            {
                continue;
            }
            tracing::info!(
                image = %source, target = %target, has = %has.join(","), platforms = %wanted.join(","),
                job = %name, "the mirror's tag lacks a platform of the cluster's nodes: copying it again with it"
            );
            let started =
                Box::pin(self.gate.ensure_copy(&source, &target, &wanted, &namespace)).await;
            if let Err(err) = started {
                tracing::warn!(image = %source, target = %target, error = %err, "the copy Job that adds a node platform was not started");
            }
        }
    }

    async fn drift_pass(
        &self,
        drifts: &Arc<Drifts>,
        in_use: InUse,
        recorder: &Recorder,
        told: &mut HashSet<(PodKey, String)>,
    ) {
        // What was told of pods that are gone is forgotten.
        let live: HashSet<&PodKey> = in_use.values().flatten().collect();
        told.retain(|(key, _)| live.contains(key));
        let mut checks = Vec::new();
        for ((source, target), pods) in in_use {
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
    }
}
