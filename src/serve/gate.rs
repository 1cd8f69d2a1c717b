//! The gate controller (DESIGN §10): watches privatize's copy Jobs, their
//! pods (a copy that exited 0 is noticed before its Job is marked complete)
//! and the pods it gated (label selectors), and releases a pod once every image it
//! waits for answers a fresh HEAD, or reverts it to its original images when
//! the copy failed for good. A periodic sweep catches missed signals; it
//! also runs once the watches have listed everything, so a restart settles
//! the pods gated meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How soon after an event the sweep runs (events in between are coalesced).
const SETTLE: Duration = Duration::from_millis(200);

use super::flights::Flights;
use super::jobs::{self, job_name, job_state, Ensured, JobSettings, JobState};
use super::metrics::Metrics;
use super::presence::Checker;
use super::release::{is_gated, release_patch, revert_patch, verdict, waits, Verdict, Wait};
use crate::image::TargetRegistry;
use crate::k8s::MANAGED_BY;
use crate::mutate::pods::{Presence, GATED_LABEL};

/// What the controller needs.
pub struct Gate {
    pub client: Client,
    pub checker: Arc<Checker>,
    pub jobs: JobSettings,
    pub metrics: Arc<Metrics>,
    /// Where this serve mirrors to: it only acts on pods waiting for images there.
    pub target: TargetRegistry,
    pub sweep_interval: Duration,
    pub gate_timeout: Duration,
    /// Instance name for Events (the pod name in a cluster).
    pub instance: String,
    /// Poked when something may let a gated pod go (a Job finished, a pod was gated).
    pub nudge: Arc<Notify>,
    /// Copy Jobs the pod webhook made sure of lately (by name); a Job that
    /// finishes is forgotten here, so a pruned image gets its Job replaced.
    pub ensured_jobs: Flights<Result<Ensured, String>>,
}

/// Whether a copy Job's pod has finished with success (every container exited 0).
fn copy_succeeded(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
}

impl Gate {
    /// Runs until `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (jobs, job_writer) = reflector::store::<Job>();
        let pod_api: Api<Pod> = Api::all(self.client.clone());
        let job_api: Api<Job> = Api::namespaced(self.client.clone(), &self.jobs.namespace);
        let pod_stream = watcher(
            pod_api,
            watcher::Config::default().labels(&format!("{GATED_LABEL}=true")),
        )
        .default_backoff()
        .reflect(pod_writer)
        .boxed();
        let job_stream = watcher(
            job_api,
            watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
        )
        .default_backoff()
        .reflect(job_writer)
        .boxed();
        // The copy Jobs' pods: a copy that exited 0 has landed its image, about
        // two seconds before the Job controller marks its Job complete.
        let copy_pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.jobs.namespace);
        let mut copy_pod_stream = watcher(
            copy_pod_api,
            watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "privatize".into(),
                instance: Some(self.instance.clone()),
            },
        );
        let mut pod_stream = pod_stream;
        let mut job_stream = job_stream;
        let mut ticker = tokio::time::interval(self.sweep_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events only mark the state dirty; a short tick sweeps, so a burst
        // of events costs one sweep.
        let mut settle = tokio::time::interval(SETTLE);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finished_jobs: HashSet<String> = HashSet::new();
        let (mut pods_listed, mut jobs_listed, mut dirty) = (false, false, false);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => dirty = true,
                _ = self.nudge.notified() => dirty = true,
                _ = settle.tick() => {
                    if dirty && pods_listed && jobs_listed {
                        dirty = false;
                        self.sweep(&pods, &jobs, &recorder).await;
                    }
                }
                event = pod_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => { pods_listed = true; dirty = true }
                    // A pod gated after its copy already finished.
                    Some(Ok(watcher::Event::Apply(pod))) => dirty |= self.copy_finished_for(&pod, &jobs),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching gated pods"),
                    None => anyhow::bail!("the gated-pod watch ended"),
                },
                event = copy_pod_stream.next() => match event {
                    Some(Ok(pod)) => dirty |= copy_succeeded(&pod),
                    Some(Err(err)) => tracing::warn!(error = %err, "watching copy Jobs' pods"),
                    None => anyhow::bail!("the copy-pod watch ended"),
                },
                event = job_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => { jobs_listed = true; dirty = true }
                    Some(Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))) => {
                        self.count_finished(&job, &mut finished_jobs);
                        dirty |= job_state(&job) != JobState::Running;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching copy Jobs"),
                    None => anyhow::bail!("the copy-Job watch ended"),
                },
            }
        }
    }

    fn copy_finished_for(&self, pod: &Pod, jobs: &Store<Job>) -> bool {
        let states: HashMap<String, JobState> = jobs
            .state()
            .iter()
            .map(|j| (j.name_any(), job_state(j)))
            .collect();
        waits(pod, &self.target).iter().any(|w| {
            states
                .get(&job_name(&w.source, &w.target))
                .is_some_and(|s| *s != JobState::Running)
        })
    }

    fn count_finished(&self, job: &Job, seen: &mut HashSet<String>) {
        let state = job_state(job);
        if state != JobState::Running {
            self.ensured_jobs.forget(&job.name_any());
        }
        let uid = job.uid().unwrap_or_default();
        if state == JobState::Running || !seen.insert(uid) {
            return;
        }
        match state {
            JobState::Succeeded => self.metrics.copy_job_succeeded(),
            JobState::Failed => self.metrics.copy_job_failed(),
            JobState::Running => {}
        }
    }

    /// Looks at every gated pod once: one fresh HEAD per image, then release,
    /// revert or wait.
    pub async fn sweep(&self, pods: &Store<Pod>, jobs: &Store<Job>, recorder: &Recorder) {
        let gated: Vec<Arc<Pod>> = pods.state().into_iter().filter(|p| is_gated(p)).collect();
        if gated.is_empty() {
            return;
        }
        let job_states: HashMap<String, JobState> = jobs
            .state()
            .iter()
            .map(|j| (j.name_any(), job_state(j)))
            .collect();
        let mut per_pod = Vec::new();
        let mut targets = HashMap::new();
        for pod in gated {
            let pod_waits: Vec<(Wait, String)> = waits(&pod, &self.target)
                .into_iter()
                .map(|w| {
                    let job = job_name(&w.source, &w.target);
                    (w, job)
                })
                .collect();
            for (w, _) in &pod_waits {
                targets.insert(w.target.to_string(), w.clone());
            }
            per_pod.push((pod, pod_waits));
        }
        let mut presence = HashMap::new();
        for (key, wait) in &targets {
            presence.insert(key.clone(), self.checker.fresh(&wait.target).await);
        }
        for (pod, pod_waits) in per_pod {
            let waited = waited(&pod);
            match verdict(
                &pod_waits,
                &presence,
                &job_states,
                waited,
                self.gate_timeout,
            ) {
                Verdict::Wait => {
                    self.restart_lost_jobs(&pod_waits, &presence, &job_states)
                        .await;
                }
                Verdict::Release => {
                    if self.patch(&pod, release_patch(&pod)).await {
                        self.metrics.pod_released(waited);
                        let images: Vec<String> = pod_waits
                            .iter()
                            .map(|(w, _)| w.target.to_string())
                            .collect();
                        tracing::info!(namespace = %pod.namespace().unwrap_or_default(), pod = %pod.name_any(), waited_s = waited.as_secs_f64(), images = ?images, "pod released");
                        self.event(
                            recorder,
                            &pod,
                            EventType::Normal,
                            "ImageMirrored",
                            format!(
                                "images mirrored: {}; scheduling gate removed",
                                images.join(", ")
                            ),
                        )
                        .await;
                    }
                }
                Verdict::Revert {
                    reason,
                    image,
                    cause,
                } => {
                    if self.patch(&pod, revert_patch(&pod)).await {
                        self.metrics.pod_reverted(cause, waited);
                        tracing::warn!(namespace = %pod.namespace().unwrap_or_default(), pod = %pod.name_any(), image = %image, reason = %reason, "pod reverted to its original images");
                        self.event(
                            recorder,
                            &pod,
                            EventType::Warning,
                            "MirrorFailed",
                            format!("mirroring {image} failed: {reason}; original images restored and scheduling gate removed"),
                        )
                        .await;
                    }
                }
            }
        }
    }

    /// A gated pod whose image is missing and whose Job is gone (TTL, a
    /// deleted Job, a crash between admission and creation) gets its Job back.
    async fn restart_lost_jobs(
        &self,
        pod_waits: &[(Wait, String)],
        presence: &HashMap<String, Presence>,
        job_states: &HashMap<String, JobState>,
    ) {
        for (wait, job) in pod_waits {
            let missing = presence.get(&wait.target.to_string()) == Some(&Presence::Missing);
            if missing && !job_states.contains_key(job) {
                let spec = jobs::copy_job(&self.jobs, &wait.source, &wait.target);
                match jobs::ensure(&self.client, &spec).await {
                    Ok(_) => {
                        tracing::info!(job = %job, image = %wait.source, "copy Job recreated for a gated pod")
                    }
                    Err(err) => {
                        tracing::warn!(job = %job, error = %format!("{err:#}"), "recreating a copy Job")
                    }
                }
            }
        }
    }

    /// Applies a guarded patch; `false` when the pod is gone or someone
    /// (another replica) changed it first.
    async fn patch(&self, pod: &Pod, ops: Option<Vec<json_patch::PatchOperation>>) -> bool {
        let Some(ops) = ops else { return false };
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let result = api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch::Patch(ops)),
            )
            .await;
        match result {
            Ok(_) => true,
            // Deleted meanwhile, or released by another replica (the `test` failed).
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
                tracing::debug!(namespace = %namespace, pod = %pod.name_any(), code = s.code, "gated pod changed meanwhile; skipped");
                false
            }
            Err(err) => {
                let err = anyhow::Error::new(err)
                    .context(format!("patching gated pod {namespace}/{}", pod.name_any()));
                tracing::warn!(error = %format!("{err:#}"), "releasing a gated pod failed; the next sweep retries");
                false
            }
        }
    }

    async fn event(
        &self,
        recorder: &Recorder,
        pod: &Pod,
        kind: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: kind,
            reason: reason.into(),
            note: Some(note),
            action: if kind == EventType::Normal {
                "Release".into()
            } else {
                "Revert".into()
            },
            secondary: None,
        };
        if let Err(err) = recorder
            .publish(&event, &pod.object_ref(&()))
            .await
            .context("publishing an Event")
        {
            tracing::warn!(error = %format!("{err:#}"), reason, "event not recorded");
        }
    }
}

/// Time since the pod was created (its time at the gate).
fn waited(pod: &Pod) -> Duration {
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
    let seconds = (k8s_openapi::jiff::Timestamp::now() - created)
        .total(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(0.0)
        .max(0.0);
    Duration::from_secs_f64(seconds)
}
