//! One sweep of the gate controller, bounded in time and work whatever
//! other tenants do: every marked pod is claimed (or refused) by the trust
//! rule of `mutate::record`, the images of serve's own pods get one fresh
//! HEAD each (bounded concurrency, oldest pods first), the verdicts of
//! `release` are applied as guarded patches (bounded concurrency), and the
//! copies wanted start within the caps. Whatever the deadline leaves goes on
//! at the next tick.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use super::gate::Gate;
use super::jobs::{self, admit_copies, job_name, job_state, Ensured, Running};
use super::release::{pending, verdict, Facts, JobInfo, Pending, Verdict};
use crate::image::ImageRef;
use crate::mutate::pods::{Access, Presence, COPY_PENDING_LABEL};
use crate::mutate::record::{claim, has_label, is_gated, Claim, Wait};
use crate::mutate::settle::{release_patch, revert_patch, unpend_patch};

/// Fresh HEADs (and anonymous-access checks) in flight at once in a sweep.
const HEAD_CONCURRENCY: usize = 16;
/// Pod patches in flight at once in a sweep.
const PATCH_CONCURRENCY: usize = 16;
/// Copy-Job creations in flight at once in a sweep.
const JOB_CONCURRENCY: usize = 4;
/// The longest one sweep runs; what is left goes on at the next tick.
const MAX_SWEEP: Duration = Duration::from_secs(20);
/// How long a created copy Job is trusted to be there without asking again.
pub const JOB_TTL: Duration = Duration::from_secs(30);
/// Time limit of one copy-Job creation (DESIGN §10).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest error line of a copy kept for an Event.
const ERROR_MAX: usize = 400;

/// The watches' caches a sweep reads.
pub struct Stores {
    pub gated: Store<Pod>,
    pub pending: Store<Pod>,
    pub jobs: Store<Job>,
    pub copy_pods: Store<Pod>,
}

/// One pod serve recognised as its own.
struct Own {
    pod: Arc<Pod>,
    gated: bool,
    waits: Vec<Wait>,
    /// The copy Job of each wait, and the platforms it copies, index-aligned.
    jobs: Vec<String>,
    platforms: Vec<Vec<String>>,
}

enum Action<'a> {
    Release(&'a Own),
    Revert {
        own: &'a Own,
        reason: String,
        image: String,
        cause: &'static str,
    },
    /// Drop the copy-pending label (its copies started, or it waited too long).
    Unpend(&'a Own),
}

/// What a sweep left.
pub(super) struct Swept {
    /// Everything was looked at and no copy started.
    pub finished: bool,
    /// When the first pod still waiting reaches the gate timeout.
    pub next: Option<Instant>,
}

impl Swept {
    const DONE: Self = Self {
        finished: true,
        next: None,
    };
}

impl Action<'_> {
    /// Whether this action settles `own`.
    fn is(&self, own: &Own) -> bool {
        let of = match self {
            Action::Release(o) | Action::Unpend(o) => o,
            Action::Revert { own, .. } => own,
        };
        std::ptr::eq(*of, own)
    }
}

/// A wanted copy: the requesting namespace, the Job name, the image pair.
struct Want {
    namespace: String,
    job: String,
    platforms: Vec<String>,
    wait: Wait,
}

impl Gate {
    /// Looks at every marked pod once; `finished` is false when the deadline
    /// cut it short or copies were started (another sweep should follow
    /// soon); `next` is when the first pod still waiting reaches the gate timeout.
    pub(super) async fn sweep(&self, stores: &Stores, recorder: &Recorder) -> Swept {
        let c = &self.config;
        let deadline = Instant::now() + c.sweep_interval.clamp(Duration::from_secs(1), MAX_SWEEP);
        let mut marked: Vec<(Arc<Pod>, bool)> = Vec::new();
        let mut seen = HashSet::new();
        for pod in stores.gated.state() {
            if is_gated(&pod) && seen.insert(pod.uid().unwrap_or_default()) {
                marked.push((pod, true));
            }
        }
        for pod in stores.pending.state() {
            if has_label(&pod, COPY_PENDING_LABEL) && seen.insert(pod.uid().unwrap_or_default()) {
                marked.push((pod, false));
            }
        }
        self.warned
            .lock()
            .expect("warned lock")
            .retain(|uid| seen.contains(uid));
        if marked.is_empty() {
            return Swept::DONE;
        }
        marked.sort_by_key(|(pod, _)| created(pod));

        let mut own = Vec::new();
        for (pod, gated) in marked {
            match claim(&pod, &c.settings) {
                Claim::Ours(waits) => {
                    let platforms: Vec<Vec<String>> = waits
                        .iter()
                        .map(|w| c.platforms.for_copy(&w.source))
                        .collect();
                    let jobs = waits
                        .iter()
                        .zip(&platforms)
                        .map(|(w, p)| job_name(&w.source, &w.target, p))
                        .collect();
                    own.push(Own {
                        pod,
                        gated,
                        waits,
                        jobs,
                        platforms,
                    });
                }
                Claim::Foreign => {}
                Claim::Forged(why) => self.refuse(&pod, &why, recorder).await,
            }
        }
        if own.is_empty() {
            return Swept::DONE;
        }

        let mut targets = Vec::new();
        let mut distinct = HashSet::new();
        for wait in own.iter().flat_map(|o| &o.waits) {
            if distinct.insert(wait.target.to_string()) {
                targets.push(wait.target.clone());
            }
        }
        let (presence, all_asked) = self.fresh_presence(targets, deadline).await;
        let (refused, held) = self.check_sources(&own, &presence, deadline).await;
        let jobs = job_infos(&stores.jobs, &stores.copy_pods);

        let now = Timestamp::now();
        let mut actions = Vec::new();
        let mut wanted = Vec::new();
        for o in &own {
            let facts = Facts {
                presence: &presence,
                jobs: &jobs,
                refused: &refused,
                created: created(&o.pod),
                now,
                gate_timeout: c.gate_timeout,
            };
            let start = if o.gated {
                match verdict(&o.waits, &o.jobs, &facts) {
                    Verdict::Release => {
                        actions.push(Action::Release(o));
                        continue;
                    }
                    Verdict::Revert {
                        reason,
                        image,
                        cause,
                    } => {
                        actions.push(Action::Revert {
                            own: o,
                            reason,
                            image,
                            cause,
                        });
                        continue;
                    }
                    Verdict::Wait { start } => start,
                }
            } else {
                match pending(&o.waits, &o.jobs, &facts) {
                    Pending::Done | Pending::GiveUp => {
                        actions.push(Action::Unpend(o));
                        continue;
                    }
                    Pending::Start(start) => start,
                }
            };
            let namespace = o.pod.namespace().unwrap_or_default();
            for i in start {
                if !held.contains(&o.waits[i].source.to_string()) {
                    wanted.push(Want {
                        namespace: namespace.clone(),
                        job: o.jobs[i].clone(),
                        platforms: o.platforms[i].clone(),
                        wait: o.waits[i].clone(),
                    });
                }
            }
        }
        let waiting: Vec<Timestamp> = own
            .iter()
            .filter(|o| !actions.iter().any(|a| a.is(o)))
            .map(|o| created(&o.pod))
            .collect();
        let patched = self.apply(actions, recorder, deadline).await;
        let (copies_done, started) = self.start_copies(wanted, &stores.jobs, deadline).await;
        let next = waiting.into_iter().min().map(|first| {
            let left = (first - Timestamp::now())
                .total(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(0.0)
                + c.gate_timeout.as_secs_f64();
            // Just past the timeout, so that sweep reverts it.
            Instant::now() + Duration::from_secs_f64(left.max(0.0)) + Duration::from_millis(100)
        });
        Swept {
            finished: all_asked && patched && copies_done && !started,
            next,
        }
    }

    /// One fresh HEAD per target, oldest pods' first, until the deadline;
    /// a target not asked in time is absent (unknown). Also whether all were asked.
    async fn fresh_presence(
        &self,
        targets: Vec<ImageRef>,
        deadline: Instant,
    ) -> (HashMap<String, Presence>, bool) {
        let total = targets.len();
        // Futures built in a loop, not in a stream closure: rustc cannot
        // prove such closures' futures Send (rust-lang/rust#102211).
        let mut asks = Vec::new();
        for target in targets {
            let checker = self.config.checker.clone();
            asks.push(async move {
                let presence = checker.fresh(&target).await;
                (target.to_string(), presence)
            });
        }
        let mut heads = stream::iter(asks).buffer_unordered(HEAD_CONCURRENCY);
        let mut presence = HashMap::new();
        while let Ok(Some((target, answer))) = tokio::time::timeout_at(deadline, heads.next()).await
        {
            presence.insert(target, answer);
        }
        if presence.len() < total {
            tracing::warn!(
                asked = presence.len(),
                targets = total,
                "sweep deadline reached before every target was asked; the rest go on at the next sweep"
            );
        }
        let all = presence.len() == total;
        (presence, all)
    }

    /// Sources of missing images in namespaces that may not mirror private
    /// images: those anonymous clients cannot read are refused (with why),
    /// those not answered in time are held (no copy yet).
    async fn check_sources(
        &self,
        own: &[Own],
        presence: &HashMap<String, Presence>,
        deadline: Instant,
    ) -> (HashMap<String, String>, HashSet<String>) {
        let settings = &self.config.settings;
        let mut sources = Vec::new();
        let mut distinct = HashSet::new();
        for o in own {
            let namespace = o.pod.namespace().unwrap_or_default();
            if settings.private_sources_allowed(&namespace) {
                continue;
            }
            for wait in &o.waits {
                let missing = presence.get(&wait.target.to_string()) == Some(&Presence::Missing);
                if missing && distinct.insert(wait.source.to_string()) {
                    sources.push(wait.source.clone());
                }
            }
        }
        let mut asks = Vec::new();
        for source in sources.clone() {
            let checker = self.config.sources.clone();
            asks.push(async move {
                let access = checker.access(&source).await;
                (source.to_string(), access)
            });
        }
        let mut checks = stream::iter(asks).buffer_unordered(HEAD_CONCURRENCY);
        let mut answered = HashMap::new();
        while let Ok(Some((source, access))) =
            tokio::time::timeout_at(deadline, checks.next()).await
        {
            answered.insert(source, access);
        }
        let mut refused = HashMap::new();
        let mut held = HashSet::new();
        for source in sources {
            let key = source.to_string();
            match answered.get(&key) {
                Some(Access::Public) => {}
                Some(Access::Private) => {
                    refused.insert(
                        key,
                        format!("{source} cannot be read anonymously, and this namespace may not mirror private images (PRIVATIZE_PRIVATE_SOURCE_NAMESPACES)"),
                    );
                }
                Some(Access::Unknown) | None => {
                    held.insert(key);
                }
            }
        }
        (refused, held)
    }

    /// Applies the verdicts, a bounded number at once, until the deadline.
    async fn apply(
        &self,
        actions: Vec<Action<'_>>,
        recorder: &Recorder,
        deadline: Instant,
    ) -> bool {
        let total = actions.len();
        let mut done = 0;
        let mut acts = Vec::new();
        for action in actions {
            acts.push(self.act(action, recorder));
        }
        let mut work = stream::iter(acts).buffer_unordered(PATCH_CONCURRENCY);
        while let Ok(Some(())) = tokio::time::timeout_at(deadline, work.next()).await {
            done += 1;
        }
        done == total
    }

    async fn act(&self, action: Action<'_>, recorder: &Recorder) {
        match action {
            Action::Release(own) => self.release(own, recorder).await,
            Action::Revert {
                own,
                reason,
                image,
                cause,
            } => self.revert(own, &reason, &image, cause, recorder).await,
            Action::Unpend(own) => {
                if let Some(ops) = unpend_patch(&own.pod) {
                    let _ = self.patch(&own.pod, ops).await;
                }
            }
        }
    }

    async fn release(&self, own: &Own, recorder: &Recorder) {
        let Some(ops) = release_patch(&own.pod) else {
            return;
        };
        if self.patch(&own.pod, ops).await.is_err() {
            return;
        }
        let waited = waited(&own.pod);
        self.config.metrics.pod_released(waited);
        let images: Vec<String> = own.waits.iter().map(|w| w.target.to_string()).collect();
        tracing::info!(namespace = %own.pod.namespace().unwrap_or_default(), pod = %own.pod.name_any(), waited_s = waited.as_secs_f64(), images = ?images, "pod released");
        self.event(
            recorder,
            &own.pod,
            EventType::Normal,
            "ImageMirrored",
            "Release",
            format!(
                "images mirrored: {}; scheduling gate removed",
                images.join(", ")
            ),
        )
        .await;
    }

    /// Sets the images back and removes the gate; when another admission
    /// policy refuses the images, removes only the gate and label, so no pod
    /// is left gated, and says so.
    async fn revert(
        &self,
        own: &Own,
        reason: &str,
        image: &str,
        cause: &'static str,
        recorder: &Recorder,
    ) {
        let containers: Vec<&str> = own.waits.iter().map(|w| w.container.as_str()).collect();
        let Some(ops) = revert_patch(&own.pod, &containers) else {
            return;
        };
        let pod = &own.pod;
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let note = match self.patch(pod, ops).await {
            Ok(()) => format!("mirroring {image} failed: {reason}; original images restored and scheduling gate removed"),
            Err(PatchError::Gone) => return,
            Err(PatchError::Other) => return,
            Err(PatchError::Refused(refusal)) => {
                // Changed by another replica meanwhile, or refused outright?
                match self.still_as_seen(pod).await {
                    Some(true) => {}
                    _ => return,
                }
                let Some(fallback) = release_patch(pod) else {
                    return;
                };
                if self.patch(pod, fallback).await.is_err() {
                    return;
                }
                tracing::warn!(namespace = %namespace, pod = %name, refusal = %refusal, "revert refused; released with its images as they are");
                format!("mirroring {image} failed: {reason}; setting the original images back was refused ({refusal}): scheduling gate removed, images left as mirrored")
            }
        };
        let waited = waited(pod);
        self.config.metrics.pod_reverted(cause, waited);
        tracing::warn!(namespace = %namespace, pod = %name, image = %image, reason = %reason, "pod reverted to its original images");
        self.event(
            recorder,
            pod,
            EventType::Warning,
            "MirrorFailed",
            "Revert",
            note,
        )
        .await;
    }

    /// Whether the pod as the apiserver has it now still carries the gate and
    /// the images we saw (None: it could not be read, or is gone).
    async fn still_as_seen(&self, seen: &Pod) -> Option<bool> {
        let api: Api<Pod> = Api::namespaced(
            self.config.client.clone(),
            &seen.namespace().unwrap_or_default(),
        );
        let now = api.get_opt(&seen.name_any()).await.ok()??;
        let images = |p: &Pod| -> Vec<Option<String>> {
            p.spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
                .map(|c| c.image.clone())
                .collect()
        };
        Some(is_gated(&now) && images(&now) == images(seen))
    }

    /// Starts the wanted copies the caps allow, a few at once, until the
    /// deadline. Returns whether all allowed were started, and whether any
    /// Job was made (the next sweep then follows soon).
    async fn start_copies(
        &self,
        wanted: Vec<Want>,
        jobs: &Store<Job>,
        deadline: Instant,
    ) -> (bool, bool) {
        if wanted.is_empty() {
            return (true, false);
        }
        let keys: Vec<(String, String)> = wanted
            .iter()
            .map(|w| (w.namespace.clone(), w.job.clone()))
            .collect();
        let running = Running::of(jobs.state().iter().map(|j| j.as_ref()));
        let admitted = admit_copies(&keys, &running, self.config.caps);
        let distinct: HashSet<&str> = keys.iter().map(|(_, job)| job.as_str()).collect();
        for _ in admitted.len()..distinct.len() {
            self.config.metrics.copy_job_deferred();
        }
        if admitted.len() < distinct.len() {
            tracing::info!(
                wanted = distinct.len(),
                starting = admitted.len(),
                running = running.total,
                "copy Jobs held back by the caps"
            );
        }
        let total = admitted.len();
        let mut starts = Vec::new();
        for i in admitted {
            let want = &wanted[i];
            starts.push(self.ensure_copy(
                &want.wait.source,
                &want.wait.target,
                &want.platforms,
                &want.namespace,
            ));
        }
        let mut work = stream::iter(starts).buffer_unordered(JOB_CONCURRENCY);
        let (mut done, mut made) = (0, false);
        while let Ok(Some(result)) = tokio::time::timeout_at(deadline, work.next()).await {
            done += 1;
            made |= matches!(result, Ok(Ensured::Created | Ensured::Replaced));
        }
        (done == total, made)
    }

    /// Makes sure the copy Job of one image (restricted to `platforms`) runs (single-flight, remembered
    /// for a while once it does).
    pub async fn ensure_copy(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        platforms: &[String],
        requested_by: &str,
    ) -> Result<Ensured, String> {
        let job = jobs::copy_job(&self.config.jobs, source, target, platforms, requested_by);
        let name = job.metadata.name.clone().unwrap_or_default();
        let client = self.config.client.clone();
        let metrics = self.config.metrics.clone();
        let key = name.clone();
        let source = source.to_string();
        let (result, _) = self
            .ensured_jobs
            .get(&key, move || async move {
                let result =
                    match tokio::time::timeout(JOB_TIMEOUT, jobs::ensure(&client, &job)).await {
                        Ok(Ok(ensured)) => Ok(ensured),
                        Ok(Err(err)) => Err(format!("{err:#}")),
                        Err(_) => Err(format!(
                            "creating copy Job {name}: no answer within {}s",
                            JOB_TIMEOUT.as_secs()
                        )),
                    };
                match &result {
                    Ok(Ensured::Created | Ensured::Replaced) => {
                        metrics.copy_job_created();
                        tracing::info!(job = %name, source = %source, "copy Job created");
                    }
                    Ok(Ensured::Running) => {}
                    Err(err) => tracing::warn!(job = %name, error = %err, "copy Job not created"),
                }
                let keep = if result.is_ok() {
                    JOB_TTL
                } else {
                    Duration::ZERO
                };
                (result, keep)
            })
            .await;
        result
    }

    /// A pod carrying privatize's marks that privatize would not have
    /// written: left alone, with one Warning Event.
    async fn refuse(&self, pod: &Pod, why: &str, recorder: &Recorder) {
        let uid = pod.uid().unwrap_or_default();
        if !self.warned.lock().expect("warned lock").insert(uid) {
            return;
        }
        self.config.metrics.pod_refused();
        tracing::warn!(namespace = %pod.namespace().unwrap_or_default(), pod = %pod.name_any(), why = %why, "pod carries privatize's marks that privatize did not write; left alone");
        self.event(
            recorder,
            pod,
            EventType::Warning,
            "MirrorRefused",
            "Refuse",
            format!("privatize did not write this pod's gate or record ({why}): it will not release, revert or copy for it; remove the privatize.io/mirror scheduling gate yourself"),
        )
        .await;
    }

    /// Applies a guarded patch.
    async fn patch(
        &self,
        pod: &Pod,
        ops: Vec<json_patch::PatchOperation>,
    ) -> Result<(), PatchError> {
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.config.client.clone(), &namespace);
        let result = api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch::Patch(ops)),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(PatchError::Gone),
            // A failed `test` (another replica was first), or another admission
            // stage refusing the change: the caller tells them apart.
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                tracing::debug!(namespace = %namespace, pod = %pod.name_any(), code = s.code, message = %s.message, "patch of a marked pod not applied");
                Err(PatchError::Refused(one_line(&s.message)))
            }
            Err(err) => {
                let err = anyhow::Error::new(err)
                    .context(format!("patching pod {namespace}/{}", pod.name_any()));
                tracing::warn!(error = %format!("{err:#}"), "patching a marked pod failed; the next sweep retries");
                Err(PatchError::Other)
            }
        }
    }

    async fn event(
        &self,
        recorder: &Recorder,
        pod: &Pod,
        kind: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: kind,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::warn!(error = %err, reason, "event not recorded");
        }
    }
}

/// Why a patch did not apply.
enum PatchError {
    Gone,
    /// A 4xx: a failed `test`, or a refusal by another admission stage.
    Refused(String),
    Other,
}

/// What the gate knows of every copy Job: state, when it failed, and the
/// copy's error line from its last failed pod.
fn job_infos(jobs: &Store<Job>, copy_pods: &Store<Pod>) -> HashMap<String, JobInfo> {
    let mut errors: HashMap<String, (Timestamp, String)> = HashMap::new();
    for pod in copy_pods.state() {
        let Some(job) = pod.labels().get("job-name").cloned() else {
            continue;
        };
        let Some(message) = termination_error(&pod) else {
            continue;
        };
        let at = created(&pod);
        if errors.get(&job).is_none_or(|(seen, _)| *seen <= at) {
            errors.insert(job, (at, message));
        }
    }
    jobs.state()
        .iter()
        .map(|job| {
            let name = job.name_any();
            let failed_at = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            let info = JobInfo {
                state: job_state(job),
                failed_at,
                error: errors.get(&name).map(|(_, e)| e.clone()),
            };
            (name, info)
        })
        .collect()
}

/// The copy's one-line error from a failed copy pod's termination message
/// (its log tail): the last `error: ` line, else the last line.
fn termination_error(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let message = statuses
        .iter()
        .filter_map(|s| s.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
        .find_map(|t| t.message.clone())?;
    let line = message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .or_else(|| message.lines().rev().map(str::trim).find(|l| !l.is_empty()))?;
    Some(line.chars().take(ERROR_MAX).collect())
}

fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(ERROR_MAX)
        .collect()
}

fn created(pod: &Pod) -> Timestamp {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now)
}

/// Time since the pod was created (its time at the gate).
fn waited(pod: &Pod) -> Duration {
    let seconds = (Timestamp::now() - created(pod))
        .total(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(0.0)
        .max(0.0);
    Duration::from_secs_f64(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_copys_error_line_is_taken_from_its_log_tail() {
        let pod: Pod = serde_json::from_value(json!({
            "status": {"containerStatuses": [{
                "name": "sync", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message":
                    "{\"level\":\"INFO\",\"message\":\"copying\"}\nerror: copying a to b: tag v1 is IMMUTABLE\n"}}
            }]}
        }))
        .unwrap();
        assert_eq!(
            termination_error(&pod).as_deref(),
            Some("copying a to b: tag v1 is IMMUTABLE")
        );
    }
}
