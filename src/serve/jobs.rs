//! Copy Jobs (DESIGN §4, §10, §11): the pure Job spec for one image, the
//! caps on how many run at once (in all, and per requesting namespace), and
//! the create-or-reuse call that makes sure exactly one such Job exists.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::Client;

use crate::copy_job::template::{PodTemplate, COPY_CONTAINER};
use crate::image::ImageRef;
use crate::k8s::MANAGED_BY;
use crate::manifest::sha256_digest;

/// Label with the hash that names a copy Job.
pub const SOURCE_HASH_LABEL: &str = "privatize.io/source-hash";
/// Label with the namespace whose pod first wanted the copy (its share of the cap).
pub const REQUESTED_BY_LABEL: &str = "privatize.io/requested-by";
/// Annotations with the Job's source and target references.
pub const SOURCE_ANNOTATION: &str = "privatize.io/source";
pub const TARGET_ANNOTATION: &str = "privatize.io/target";
/// Where the source-credentials Secret is mounted (its `.dockerconfigjson` as `config.json`).
pub const SOURCE_CREDENTIALS_DIR: &str = "/etc/privatize/source-credentials";
const NON_ROOT_UID: i64 = 65532;

/// Everything a copy Job depends on besides its image pair.
#[derive(Debug, Clone, Default)]
pub struct JobSettings {
    pub namespace: String,
    /// privatize's own container image.
    pub image: String,
    pub service_account: String,
    pub backoff_limit: i32,
    pub completions: i32,
    pub active_deadline_seconds: i64,
    pub ttl_seconds_after_finished: i32,
    /// A `kubernetes.io/dockerconfigjson` Secret in `namespace` used as the Job's `DOCKER_CONFIG`.
    pub source_credentials_secret: Option<String>,
    /// Environment passed on to every Job (AWS wiring, target kind, repository settings, CA and plain-HTTP settings).
    pub env: Vec<EnvVar>,
    /// Volumes (and their mounts) passed on, e.g. the projected web-identity token and the CA bundle.
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// The user's pod template (`--copy-job-pod-template`), merged in last.
    pub pod_template: PodTemplate,
}

/// The deterministic Job name: `privatize-sync-<first 16 hex of sha256(source + " " + target)>`.
/// Where a copy Job's `sync-image` writes its counts: the container's
/// termination message (Kubernetes' default path), which serve reads.
pub const SUMMARY_FILE: &str = "/dev/termination-log";

/// The counts of a copy's summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub copied: u64,
    pub skipped: u64,
}

/// Reads `images=N referrers_copied=N referrers_skipped=N` (its last line
/// that has both referrer counts); `None` for anything else.
pub fn summary(message: &str) -> Option<Summary> {
    message.lines().rev().find_map(|line| {
        let mut copied = None;
        let mut skipped = None;
        for field in line.split_whitespace() {
            match field.split_once('=') {
                Some(("referrers_copied", n)) => copied = n.parse().ok(),
                Some(("referrers_skipped", n)) => skipped = n.parse().ok(),
                _ => {}
            }
        }
        Some(Summary {
            copied: copied?,
            skipped: skipped?,
        })
    })
}

/// The Job of one copy: of `source` to `target`, restricted to `platforms`
/// (empty: every platform; a Job per platform set, so a cluster that gains
/// a platform gets a copy of its own).
pub fn job_name(source: &ImageRef, target: &ImageRef, platforms: &[String]) -> String {
    format!("privatize-sync-{}", source_hash(source, target, platforms))
}

fn source_hash(source: &ImageRef, target: &ImageRef, platforms: &[String]) -> String {
    let text = match platforms {
        [] => format!("{source} {target}"),
        _ => format!("{source} {target} {}", platforms.join(",")),
    };
    let digest = sha256_digest(text.as_bytes());
    digest.trim_start_matches("sha256:")[..16].to_string()
}

/// The copy Job for one image (pure), first wanted by a pod of `requested_by`.
pub fn copy_job(
    settings: &JobSettings,
    source: &ImageRef,
    target: &ImageRef,
    platforms: &[String],
    requested_by: &str,
) -> Job {
    let hash = source_hash(source, target, platforms);
    let selector = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (SOURCE_HASH_LABEL.to_string(), hash),
    ]);
    let mut labels = selector.clone();
    if !requested_by.is_empty() {
        labels.insert(REQUESTED_BY_LABEL.to_string(), requested_by.to_string());
    }
    let mut pod_labels = selector;
    // Istio reads the label (and the annotation, on older versions): a sidecar would keep the Job running.
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let annotations = BTreeMap::from([
        (SOURCE_ANNOTATION.to_string(), source.to_string()),
        (TARGET_ANNOTATION.to_string(), target.to_string()),
    ]);
    let mut pod_annotations = annotations.clone();
    pod_annotations.insert("sidecar.istio.io/inject".into(), "false".into());

    let mut env = settings.env.clone();
    if !platforms.is_empty() {
        env.push(EnvVar {
            name: "PRIVATIZE_PLATFORMS".into(),
            value: Some(platforms.join(",")),
            ..Default::default()
        });
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (volume, mount) in &settings.volumes {
        volumes.push(volume.clone());
        mounts.push(mount.clone());
    }
    if let Some(secret) = &settings.source_credentials_secret {
        volumes.push(Volume {
            name: "source-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "source-credentials".into(),
            mount_path: SOURCE_CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.retain(|e| e.name != "DOCKER_CONFIG");
        env.push(EnvVar {
            name: "DOCKER_CONFIG".into(),
            value: Some(SOURCE_CREDENTIALS_DIR.into()),
            ..Default::default()
        });
    }
    let container = Container {
        name: COPY_CONTAINER.into(),
        image: Some(settings.image.clone()),
        args: Some(vec![
            "sync-image".into(),
            source.to_string(),
            "--target".into(),
            target.to_string(),
            "--output".into(),
            "json".into(),
            "--log-format".into(),
            "json".into(),
        ]),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        // The copy's last stderr line is its one-line error: serve names it
        // in the MirrorFailed Event (the log tail when the copy failed).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("50m".into())),
                ("memory".into(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity("512Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(settings.service_account.clone()),
        // A copy needs no Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT_UID),
            run_as_group: Some(NON_ROOT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..Default::default()
    };
    settings.pod_template.apply(&mut pod);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(source, target, platforms)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit),
            completions: Some(settings.completions),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The state of a Job, from its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// Reads a Job's state from its `Complete` / `Failed` conditions.
pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete") {
        JobState::Succeeded
    } else if holds("Failed") {
        JobState::Failed
    } else {
        JobState::Running
    }
}

/// Caps on copy Jobs running at once (DESIGN §11 "Bounded work").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// In all (`PRIVATIZE_MAX_COPY_JOBS`).
    pub total: usize,
    /// Requested by one namespace (`PRIVATIZE_MAX_COPY_JOBS_PER_NAMESPACE`).
    pub per_namespace: usize,
}

/// The running copy Jobs, counted for the caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    pub total: usize,
    pub by_namespace: HashMap<String, usize>,
}

impl Running {
    /// Counts the Jobs that are still running (a Job's namespace share is its
    /// `privatize.io/requested-by` label).
    pub fn of<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Self {
        let mut running = Self::default();
        for job in jobs {
            if job_state(job) != JobState::Running || job.metadata.deletion_timestamp.is_some() {
                continue;
            }
            running.add(requested_by(job));
        }
        running
    }

    fn add(&mut self, namespace: &str) {
        self.total += 1;
        *self.by_namespace.entry(namespace.to_string()).or_default() += 1;
    }
}

fn requested_by(job: &Job) -> &str {
    job.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REQUESTED_BY_LABEL))
        .map(String::as_str)
        .unwrap_or_default()
}

/// Which of the wanted copies (`(namespace, job name)`, oldest pod first)
/// may start now: one per Job name, round-robin across namespaces so that
/// no namespace starves the others, within both caps. Pure.
pub fn admit_copies(wanted: &[(String, String)], running: &Running, caps: Caps) -> Vec<usize> {
    let mut queues: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, (namespace, job)) in wanted.iter().enumerate() {
        if !seen.insert(job.as_str()) {
            continue;
        }
        match queues.iter_mut().find(|(ns, _)| *ns == namespace.as_str()) {
            Some((_, queue)) => queue.push(i),
            None => queues.push((namespace.as_str(), vec![i])),
        }
    }
    let mut running = running.clone();
    let mut admitted = Vec::new();
    let mut progressed = true;
    while progressed && running.total < caps.total {
        progressed = false;
        for (namespace, queue) in queues.iter_mut() {
            if running.total >= caps.total {
                break;
            }
            if running.by_namespace.get(*namespace).copied().unwrap_or(0) >= caps.per_namespace
                || queue.is_empty()
            {
                continue;
            }
            admitted.push(queue.remove(0));
            running.add(namespace);
            progressed = true;
        }
    }
    admitted
}

/// What `ensure` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// A running Job for the same image (another pod or replica started it).
    Running,
    /// A finished Job was replaced (its image is missing again).
    Replaced,
}

/// Makes sure a copy Job for this image is running: creates it, accepts an
/// existing running one, and replaces a finished one (the caller only asks
/// when the image is missing, so a finished Job means it was pruned or failed).
pub async fn ensure(client: &Client, job: &Job) -> Result<Ensured> {
    let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let create = || async {
        match api.create(&PostParams::default(), job).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err).with_context(|| format!("creating copy Job {namespace}/{name}")),
        }
    };
    if create().await? {
        return Ok(Ensured::Created);
    }
    let existing = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading copy Job {namespace}/{name}"))?;
    let Some(existing) = existing else {
        // Deleted between our create and read (TTL controller): create again.
        return Ok(if create().await? {
            Ensured::Created
        } else {
            Ensured::Running
        });
    };
    if job_state(&existing) == JobState::Running || existing.metadata.deletion_timestamp.is_some() {
        return Ok(Ensured::Running);
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        // Gone already, or replaced by another replica since we read it.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("replacing finished copy Job {namespace}/{name}"))
        }
    }
    Ok(if create().await? {
        Ensured::Replaced
    } else {
        Ensured::Running
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_copys_summary_line_is_read_and_anything_else_is_not() {
        let s = super::summary("images=1 referrers_copied=5 referrers_skipped=2\n").unwrap();
        assert_eq!((s.copied, s.skipped), (5, 2));
        let s = super::summary("noise\nimages=2 referrers_copied=0 referrers_skipped=0").unwrap();
        assert_eq!((s.copied, s.skipped), (0, 0));
        assert_eq!(super::summary("error: copying x: y"), None);
        assert_eq!(
            super::summary("referrers_copied=x referrers_skipped=1"),
            None
        );
    }

    use super::*;

    fn settings() -> JobSettings {
        JobSettings {
            namespace: "privatize".into(),
            image: "example.com/privatize:1".into(),
            service_account: "privatize".into(),
            backoff_limit: 1,
            completions: 1,
            active_deadline_seconds: 900,
            ttl_seconds_after_finished: 3600,
            ..Default::default()
        }
    }

    fn pair() -> (ImageRef, ImageRef) {
        (
            ImageRef::parse("nginx:1.27").unwrap(),
            ImageRef::parse("123.dkr.ecr.eu-west-1.amazonaws.com/docker.io/library/nginx:1.27")
                .unwrap(),
        )
    }

    #[test]
    fn job_name_is_the_first_16_hex_of_the_pair_hash() {
        let (source, target) = pair();
        let expected = sha256_digest(
            b"docker.io/library/nginx:1.27 123.dkr.ecr.eu-west-1.amazonaws.com/docker.io/library/nginx:1.27",
        );
        assert_eq!(
            job_name(&source, &target, &[]),
            format!("privatize-sync-{}", &expected[7..23])
        );
        assert_eq!(
            job_name(&source, &target, &[]).len(),
            "privatize-sync-".len() + 16
        );
    }

    #[test]
    fn a_platform_set_is_a_job_of_its_own_and_its_env() {
        let (source, target) = pair();
        let two = ["linux/amd64".to_string(), "linux/arm64".to_string()];
        let name = job_name(&source, &target, &two);
        assert_ne!(name, job_name(&source, &target, &[]));
        assert_ne!(name, job_name(&source, &target, &two[..1]));
        let job = copy_job(&settings(), &source, &target, &two, "app");
        assert_eq!(job.metadata.name.as_deref(), Some(name.as_str()));
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let platforms: Vec<_> = env
            .iter()
            .filter(|e| e.name == "PRIVATIZE_PLATFORMS")
            .map(|e| e.value.as_deref())
            .collect();
        assert_eq!(platforms, [Some("linux/amd64,linux/arm64")]);
        let whole = copy_job(&settings(), &source, &target, &[], "app");
        let env = whole.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone();
        assert!(!env
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "PRIVATIZE_PLATFORMS"));
    }

    #[test]
    fn copy_job_runs_sync_image_without_an_api_token_as_non_root() {
        let (source, target) = pair();
        let job = copy_job(&settings(), &source, &target, &[], "app");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.active_deadline_seconds, Some(900));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("privatize"));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "sync-image",
                "docker.io/library/nginx:1.27",
                "--target",
                "123.dkr.ecr.eu-west-1.amazonaws.com/docker.io/library/nginx:1.27",
                "--output",
                "json",
                "--log-format",
                "json"
            ]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
            ["ALL"]
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "privatize");
        assert_eq!(labels[SOURCE_HASH_LABEL].len(), 16);
        let annotations = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[SOURCE_ANNOTATION],
            "docker.io/library/nginx:1.27"
        );
    }

    fn wanted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(ns, job)| (ns.to_string(), job.to_string()))
            .collect()
    }

    #[test]
    fn copies_start_round_robin_across_namespaces_within_both_caps() {
        let want = wanted(&[
            ("a", "j1"),
            ("a", "j2"),
            ("a", "j3"),
            ("a", "j4"),
            ("b", "j5"),
            ("c", "j6"),
            ("c", "j1"), // the same Job again: one start
        ]);
        let caps = Caps {
            total: 5,
            per_namespace: 2,
        };
        let admitted = admit_copies(&want, &Running::default(), caps);
        let jobs: Vec<&str> = admitted.iter().map(|&i| want[i].1.as_str()).collect();
        assert_eq!(jobs, ["j1", "j5", "j6", "j2"]);
        // What already runs counts: namespace a is at its share, the total has one slot.
        let running = Running {
            total: 4,
            by_namespace: HashMap::from([("a".to_string(), 2), ("b".to_string(), 2)]),
        };
        let admitted = admit_copies(&want, &running, caps);
        let jobs: Vec<&str> = admitted.iter().map(|&i| want[i].1.as_str()).collect();
        assert_eq!(jobs, ["j6"]);
        assert!(admit_copies(
            &want,
            &Running {
                total: 5,
                ..running
            },
            caps
        )
        .is_empty());
    }

    #[test]
    fn the_requesting_namespace_labels_the_job_but_not_its_selector() {
        let (source, target) = pair();
        let job = copy_job(&settings(), &source, &target, &[], "team-a");
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[REQUESTED_BY_LABEL],
            "team-a"
        );
        let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(!pod_labels.contains_key(REQUESTED_BY_LABEL));
    }

    #[test]
    fn source_credentials_secret_becomes_the_jobs_docker_config() {
        let (source, target) = pair();
        let mut s = settings();
        s.source_credentials_secret = Some("hub-creds".into());
        let job = copy_job(&s, &source, &target, &[], "app");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volume = &pod.volumes.unwrap()[0];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("hub-creds")
        );
        let c = &pod.containers[0];
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(
            |e| e.name == "DOCKER_CONFIG" && e.value.as_deref() == Some(SOURCE_CREDENTIALS_DIR)
        ));
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
    }
}
