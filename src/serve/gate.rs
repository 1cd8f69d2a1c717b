//! The gate controller (DESIGN §10, §11): watches privatize's copy Jobs and
//! their pods, the pods it gated and the copy-pending pods (label
//! selectors), and sweeps: every pod serve recognises as its own gets its
//! copies started (within the caps), is released once every image it waits
//! for answers a fresh HEAD, or reverted when the copy failed for good. The
//! sweep itself lives in `sweep.rs`; it runs on events (coalesced), on a
//! timer, and once the watches have listed everything, so a restart settles
//! the pods gated meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::flights::Flights;
use super::jobs::{job_state, Caps, Ensured, JobSettings, JobState};
use super::metrics::Metrics;
use super::presence::Checker;
use super::sources::Sources;
use crate::k8s::MANAGED_BY;
use crate::mutate::pods::{Settings, COPY_PENDING_LABEL, GATED_LABEL};

/// How soon after an event the sweep runs (events in between are coalesced).
const SETTLE: Duration = Duration::from_millis(200);

/// What the controller is built from.
pub struct GateConfig {
    pub client: Client,
    pub checker: Arc<Checker>,
    pub sources: Arc<Sources>,
    pub jobs: JobSettings,
    pub caps: Caps,
    pub metrics: Arc<Metrics>,
    /// The admission's own selection rules, applied again to every record.
    pub settings: Settings,
    pub sweep_interval: Duration,
    pub gate_timeout: Duration,
    /// Instance name for Events (the pod name in a cluster).
    pub instance: String,
}

/// The gate controller and what the pod webhook shares with it.
pub struct Gate {
    pub config: GateConfig,
    /// Poked when something may let a pod go (a Job finished, a pod was gated).
    pub nudge: Arc<Notify>,
    /// Copy Jobs made sure of lately (by name); a Job that finishes is
    /// forgotten here, so a pruned image gets its Job replaced.
    pub ensured_jobs: Flights<Result<Ensured, String>>,
    /// The copy Jobs as the watch sees them (the caps count them).
    pub job_store: Store<Job>,
    job_writer: Mutex<Option<Writer<Job>>>,
    /// UIDs of pods already warned about marks privatize did not write.
    pub(super) warned: Mutex<HashSet<String>>,
}

/// Whether a copy Job's pod has finished with success (every container exited 0).
fn copy_succeeded(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
}

impl Gate {
    pub fn new(config: GateConfig) -> Self {
        let (job_store, job_writer) = reflector::store::<Job>();
        Self {
            config,
            nudge: Arc::new(Notify::new()),
            ensured_jobs: Flights::default(),
            job_store,
            job_writer: Mutex::new(Some(job_writer)),
            warned: Mutex::default(),
        }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let c = &self.config;
        let job_writer = self
            .job_writer
            .lock()
            .expect("job writer lock")
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gate controller runs once"))?;
        let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let (gated, gated_writer) = reflector::store::<Pod>();
        let (pending, pending_writer) = reflector::store::<Pod>();
        let (copy_pods, copy_pod_writer) = reflector::store::<Pod>();
        let mut gated_stream = watcher(
            Api::<Pod>::all(c.client.clone()),
            watcher::Config::default().labels(&format!("{GATED_LABEL}=true")),
        )
        .default_backoff()
        .reflect(gated_writer)
        .boxed();
        let mut pending_stream = watcher(
            Api::<Pod>::all(c.client.clone()),
            watcher::Config::default().labels(&format!("{COPY_PENDING_LABEL}=true")),
        )
        .default_backoff()
        .reflect(pending_writer)
        .boxed();
        let mut job_stream = watcher(
            Api::<Job>::namespaced(c.client.clone(), &c.jobs.namespace),
            watcher::Config::default().labels(&managed),
        )
        .default_backoff()
        .reflect(job_writer)
        .boxed();
        // The copy Jobs' pods: a copy that exited 0 has landed its image about
        // two seconds before the Job controller marks its Job complete, and a
        // failed one holds the copy's error.
        let mut copy_pod_stream = watcher(
            Api::<Pod>::namespaced(c.client.clone(), &c.jobs.namespace),
            watcher::Config::default().labels(&managed),
        )
        .default_backoff()
        .reflect(copy_pod_writer)
        .boxed();
        let recorder = Recorder::new(
            c.client.clone(),
            Reporter {
                controller: "privatize".into(),
                instance: Some(c.instance.clone()),
            },
        );
        let stores = super::sweep::Stores {
            gated,
            pending,
            jobs: self.job_store.clone(),
            copy_pods,
        };
        let mut ticker = tokio::time::interval(c.sweep_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events only mark the state dirty; a short tick sweeps, so a burst
        // of events costs one sweep.
        let mut settle = tokio::time::interval(SETTLE);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finished_jobs: HashSet<String> = HashSet::new();
        let mut listed = [false; 4];
        let mut dirty = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => dirty = true,
                _ = self.nudge.notified() => dirty = true,
                _ = settle.tick() => {
                    if dirty && listed.iter().all(|l| *l) {
                        // A sweep cut short by its deadline goes on at the next tick.
                        dirty = !self.sweep(&stores, &recorder).await;
                    }
                }
                event = gated_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => { listed[0] = true; dirty = true }
                    Some(Ok(watcher::Event::Apply(_))) => dirty = true,
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching gated pods"),
                    None => anyhow::bail!("the gated-pod watch ended"),
                },
                event = pending_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => { listed[1] = true; dirty = true }
                    Some(Ok(watcher::Event::Apply(_))) => dirty = true,
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching copy-pending pods"),
                    None => anyhow::bail!("the copy-pending pod watch ended"),
                },
                event = copy_pod_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => { listed[2] = true; dirty = true }
                    Some(Ok(watcher::Event::Apply(pod))) => dirty |= copy_succeeded(&pod),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching copy Jobs' pods"),
                    None => anyhow::bail!("the copy-pod watch ended"),
                },
                event = job_stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => {
                        listed[3] = true;
                        dirty = true;
                        // A relist reports no deletions: keep only Jobs that still exist.
                        let live: HashSet<String> =
                            self.job_store.state().iter().filter_map(|j| j.uid()).collect();
                        finished_jobs.retain(|uid| live.contains(uid));
                    }
                    Some(Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))) => {
                        self.count_finished(&job, &mut finished_jobs);
                        dirty |= job_state(&job) != JobState::Running;
                    }
                    Some(Ok(watcher::Event::Delete(job))) => {
                        finished_jobs.remove(&job.uid().unwrap_or_default());
                        // A freed slot under the caps may let a waiting copy start.
                        dirty = true;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "watching copy Jobs"),
                    None => anyhow::bail!("the copy-Job watch ended"),
                },
            }
        }
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
            JobState::Succeeded => self.config.metrics.copy_job_succeeded(),
            JobState::Failed => self.config.metrics.copy_job_failed(),
            JobState::Running => {}
        }
    }
}
