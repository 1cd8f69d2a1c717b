//! The gate controller (DESIGN §10, §11): watches privatize's copy Jobs and
//! their pods, the pods it gated and the copy-pending pods (label
//! selectors), and sweeps: every pod serve recognises as its own gets its
//! copies started (within the caps), is released once every image it waits
//! for answers a fresh HEAD, or reverted when the copy failed for good. The
//! sweep itself lives in `sweep.rs`; it runs on events (coalesced), on a
//! timer, and once the watches have listed everything, so a restart settles
//! the pods gated meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// `--platforms`: what each copy Job copies of a tag.
    pub platforms: Arc<super::platforms::CopyPlatforms>,
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

/// What the watch tasks tell the controller loop.
#[derive(Clone, Default)]
struct Watches {
    /// Something happened that may let a pod go.
    changed: Arc<Notify>,
    /// Watches that have listed everything once, and how many there are.
    listed: Arc<AtomicUsize>,
}

impl Watches {
    fn all_listed(&self) -> bool {
        self.listed.load(Ordering::SeqCst) >= WATCHES
    }

    /// Drives one watch (its reflector updates the cache as it goes) until
    /// it ends; `relevant` says which events mark the state dirty.
    async fn drive<K, S>(
        self,
        what: &'static str,
        stream: S,
        mut relevant: impl FnMut(&watcher::Event<K>) -> bool + Send,
    ) -> &'static str
    where
        S: futures_util::Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
        K: Send,
    {
        futures_util::pin_mut!(stream);
        let mut listed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if matches!(event, watcher::Event::InitDone) && !listed {
                        listed = true;
                        self.listed.fetch_add(1, Ordering::SeqCst);
                        self.changed.notify_one();
                    }
                    if relevant(&event) {
                        self.changed.notify_one();
                    }
                }
                Err(err) => tracing::warn!(error = %err, "watching {what}"),
            }
        }
        what
    }
}

/// The watches the controller runs: gated pods, copy-pending pods, copy Jobs, their pods.
const WATCHES: usize = 4;

/// Whether a copy Job's pod has finished with success (every container exited 0).
fn copy_succeeded(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
}

/// The referrer counts a copy wrote to its termination message
/// (`sync-image --summary-file`).
fn copy_summary(pod: &Pod) -> Option<super::jobs::Summary> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .filter_map(|s| s.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code == 0)
        .find_map(|t| super::jobs::summary(t.message.as_deref()?))
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

    /// Runs until `shutdown` fires. The watches run in tasks of their own,
    /// so their caches stay current while a sweep runs; they only mark the
    /// state dirty, and a short tick sweeps, so a burst of events costs one sweep.
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
        let watches = Watches::default();
        let mut tasks = tokio::task::JoinSet::new();
        let pods_of = |label: &str| {
            watcher(
                Api::<Pod>::all(c.client.clone()),
                watcher::Config::default().labels(&format!("{label}=true")),
            )
            .default_backoff()
        };
        tasks.spawn(watches.clone().drive(
            "gated pods",
            pods_of(GATED_LABEL).reflect(gated_writer),
            |_| true,
        ));
        tasks.spawn(watches.clone().drive(
            "copy-pending pods",
            pods_of(COPY_PENDING_LABEL).reflect(pending_writer),
            |_| true,
        ));
        // The copy Jobs' pods: a copy that exited 0 has landed its image about
        // two seconds before the Job controller marks its Job complete, and a
        // failed one holds the copy's error.
        tasks.spawn(
            watches.clone().drive(
                "copy Jobs' pods",
                watcher(
                    Api::<Pod>::namespaced(c.client.clone(), &c.jobs.namespace),
                    watcher::Config::default().labels(&managed),
                )
                .default_backoff()
                .reflect(copy_pod_writer),
                {
                    let metrics = c.metrics.clone();
                    let mut counted: HashSet<String> = HashSet::new();
                    move |event| match event {
                        watcher::Event::Apply(pod) => {
                            let done = copy_succeeded(pod);
                            if done && counted.insert(pod.uid().unwrap_or_default()) {
                                if let Some(summary) = copy_summary(pod) {
                                    metrics.referrers(summary.copied, summary.skipped);
                                }
                            }
                            done
                        }
                        watcher::Event::Delete(pod) => {
                            counted.remove(&pod.uid().unwrap_or_default());
                            false
                        }
                        _ => false,
                    }
                },
            ),
        );
        let this = self.clone();
        let mut finished_jobs: HashSet<String> = HashSet::new();
        tasks.spawn(
            watches.clone().drive(
                "copy Jobs",
                watcher(
                    Api::<Job>::namespaced(c.client.clone(), &c.jobs.namespace),
                    watcher::Config::default().labels(&managed),
                )
                .default_backoff()
                .reflect(job_writer),
                move |event| match event {
                    watcher::Event::InitDone => {
                        // A relist reports no deletions: keep only Jobs that still exist.
                        let live: HashSet<String> = this
                            .job_store
                            .state()
                            .iter()
                            .filter_map(|j| j.uid())
                            .collect();
                        finished_jobs.retain(|uid| live.contains(uid));
                        true
                    }
                    watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                        this.count_finished(job, &mut finished_jobs);
                        job_state(job) != JobState::Running
                    }
                    watcher::Event::Delete(job) => {
                        finished_jobs.remove(&job.uid().unwrap_or_default());
                        // A freed slot under the caps may let a waiting copy start.
                        true
                    }
                    watcher::Event::Init => false,
                },
            ),
        );
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
        let mut settle = tokio::time::interval(SETTLE);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        // The next pod to reach the gate timeout, so it is reverted on time
        // rather than at the next tick.
        let mut timeout_at: Option<tokio::time::Instant> = None;
        loop {
            let until_timeout = async {
                match timeout_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ended = tasks.join_next() => {
                    let what = match ended {
                        Some(Ok(what)) => what,
                        Some(Err(join)) => return Err(anyhow::anyhow!("a gate watch panicked: {join}")),
                        None => "every watch",
                    };
                    anyhow::bail!("the watch of {what} ended");
                }
                _ = ticker.tick() => dirty = true,
                _ = self.nudge.notified() => dirty = true,
                _ = watches.changed.notified() => dirty = true,
                _ = until_timeout => { dirty = true; timeout_at = None }
                _ = settle.tick() => {
                    if dirty && watches.all_listed() {
                        let swept = self.sweep(&stores, &recorder).await;
                        // A sweep cut short by its deadline goes on at the next tick.
                        dirty = !swept.finished;
                        timeout_at = swept.next;
                    }
                }
            }
        }
    }

    /// Whether the copy Job `name` has run to its end (succeeded or failed):
    /// a Job of one build or platform set is not run again.
    pub fn has_run(&self, name: &str) -> bool {
        self.job_store
            .state()
            .iter()
            .any(|job| job.name_any() == name && job_state(job) != JobState::Running)
    }

    /// Whether one more copy Job for a pod of `namespace` fits the caps now
    /// (counted as deferred when it does not).
    pub fn copy_fits(&self, namespace: &str, name: &str) -> bool {
        let wanted = [(namespace.to_string(), name.to_string())];
        let running = super::jobs::Running::of(self.job_store.state().iter().map(|j| j.as_ref()));
        let fits = !super::jobs::admit_copies(&wanted, &running, self.config.caps).is_empty();
        if !fits {
            self.config.metrics.copy_job_deferred();
        }
        fits
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
