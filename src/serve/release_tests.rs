use super::*;
use crate::image::TargetRegistry;
use crate::mutate::pods::Settings;
use crate::mutate::pods::{COPY_PENDING_LABEL, GATED_LABEL};
use crate::mutate::record::{claim, is_gated, Claim};
use crate::mutate::settle::{release_patch, revert_patch, unpend_patch};
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

fn gated_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web", "namespace": "app",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"privatize.io/gated": "true", "app": "web"},
            "annotations": {"privatize.io/original-images": "{\"app\":\"nginx:1.27\",\"init\":\"busybox\"}"}
        },
        "spec": {
            "schedulingGates": [{"name": "other.example/gate"}, {"name": "privatize.io/mirror"}],
            "initContainers": [{"name": "init", "image": "reg.example/docker.io/library/busybox:latest"}],
            "containers": [
                {"name": "app", "image": "reg.example/docker.io/library/nginx:1.27"},
                {"name": "side", "image": "quay.io/org/side:1"}
            ]
        }
    }))
    .unwrap()
}

fn waits_of(pod: &Pod) -> Vec<Wait> {
    let settings = Settings::new(TargetRegistry::parse("reg.example").unwrap());
    match claim(pod, &settings) {
        Claim::Ours(waits) => waits,
        other => panic!("expected the pod to be ours, got {other:?}"),
    }
}

fn job_names(waits: &[Wait]) -> Vec<String> {
    waits
        .iter()
        .map(|w| super::super::jobs::job_name(&w.source, &w.target, &[]))
        .collect()
}

fn apply(pod: &Pod, ops: Vec<PatchOperation>) -> Pod {
    let mut value = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut value, &ops).unwrap();
    serde_json::from_value(value).unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

struct Case {
    presence: HashMap<String, Presence>,
    jobs: HashMap<String, JobInfo>,
    refused: HashMap<String, String>,
    now: Timestamp,
}

impl Case {
    fn new(waits: &[Wait], presence: Presence) -> Self {
        Self {
            presence: waits
                .iter()
                .map(|w| (w.target.to_string(), presence))
                .collect(),
            jobs: HashMap::new(),
            refused: HashMap::new(),
            now: at("2026-01-01T00:01:00Z"),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            presence: &self.presence,
            jobs: &self.jobs,
            refused: &self.refused,
            created: at("2026-01-01T00:00:00Z"),
            now: self.now,
            gate_timeout: Duration::from_secs(600),
        }
    }
}

fn job(state: JobState, failed_at: Option<&str>) -> JobInfo {
    JobInfo {
        state,
        failed_at: failed_at.map(at),
        error: None,
    }
}

#[test]
fn release_removes_only_our_gate_and_the_label() {
    let pod = gated_pod();
    let released = apply(&pod, release_patch(&pod).unwrap());
    let gates: Vec<String> = released
        .spec
        .as_ref()
        .unwrap()
        .scheduling_gates
        .clone()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(gates, ["other.example/gate"]);
    let labels = released.metadata.labels.as_ref().unwrap();
    assert!(!labels.contains_key(GATED_LABEL));
    assert_eq!(labels["app"], "web");
    assert!(!is_gated(&released));
    assert!(release_patch(&released).is_none());
}

#[test]
fn a_second_release_of_the_same_observation_fails_its_test() {
    let pod = gated_pod();
    let ops = release_patch(&pod).unwrap();
    let once = apply(&pod, ops.clone());
    let mut value = serde_json::to_value(&once).unwrap();
    assert!(
        json_patch::patch(&mut value, &ops).is_err(),
        "a stale release must not apply twice"
    );
}

#[test]
fn revert_restores_the_verified_originals_and_removes_the_gate() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let all: Vec<&str> = waits.iter().map(|w| w.container.as_str()).collect();
    let reverted = apply(&pod, revert_patch(&pod, &all).unwrap());
    let spec = reverted.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.27"));
    assert_eq!(
        spec.containers[1].image.as_deref(),
        Some("quay.io/org/side:1")
    );
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].image.as_deref(),
        Some("busybox")
    );
    assert!(!is_gated(&reverted));
    // Only verified waits are reverted.
    let partly = apply(&pod, revert_patch(&pod, &["app"]).unwrap());
    assert_eq!(
        partly
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[0]
            .image
            .as_deref(),
        Some("reg.example/docker.io/library/busybox:latest")
    );
}

#[test]
fn the_copy_pending_label_is_dropped_under_a_test_of_its_value() {
    let mut pod = gated_pod();
    pod.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(COPY_PENDING_LABEL.into(), "true".into());
    let ops = unpend_patch(&pod).unwrap();
    let unpended = apply(&pod, ops.clone());
    assert!(!unpended
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .contains_key(COPY_PENDING_LABEL));
    let mut value = serde_json::to_value(&unpended).unwrap();
    assert!(json_patch::patch(&mut value, &ops).is_err());
    assert!(unpend_patch(&unpended).is_none());
}

#[test]
fn present_images_release_and_missing_ones_wait_with_their_copies_to_start() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    let case = Case::new(&waits, Presence::Present);
    assert_eq!(verdict(&waits, &names, &case.facts()), Verdict::Release);

    let mut case = Case::new(&waits, Presence::Present);
    case.presence
        .insert(waits[1].target.to_string(), Presence::Missing);
    assert_eq!(
        verdict(&waits, &names, &case.facts()),
        Verdict::Wait { start: vec![1] }
    );
    // A running Job is enough: nothing more to start.
    case.jobs
        .insert(names[1].clone(), job(JobState::Running, None));
    assert_eq!(
        verdict(&waits, &names, &case.facts()),
        Verdict::Wait { start: vec![] }
    );
    // An unknown answer is neither presence nor a reason to start a copy.
    let case = Case::new(&waits, Presence::Unknown);
    assert_eq!(
        verdict(&waits, &names, &case.facts()),
        Verdict::Wait { start: vec![] }
    );
}

#[test]
fn a_job_failed_for_this_pod_reverts_with_its_error_but_an_older_failure_is_retried() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    let mut case = Case::new(&waits, Presence::Missing);
    case.jobs.insert(
        names[0].clone(),
        JobInfo {
            error: Some("tag 1.27 is IMMUTABLE".into()),
            ..job(JobState::Failed, Some("2026-01-01T00:00:30Z"))
        },
    );
    match verdict(&waits, &names, &case.facts()) {
        Verdict::Revert {
            reason,
            image,
            cause,
        } => {
            assert_eq!(cause, "job_failed");
            assert_eq!(image, "docker.io/library/busybox:latest");
            assert_eq!(
                reason,
                format!("copy Job {} failed: tag 1.27 is IMMUTABLE", names[0])
            );
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    case.jobs.insert(
        names[0].clone(),
        job(JobState::Failed, Some("2025-12-31T23:00:00Z")),
    );
    assert_eq!(
        verdict(&waits, &names, &case.facts()),
        Verdict::Wait { start: vec![0, 1] }
    );
}

#[test]
fn a_failed_job_of_an_image_that_landed_anyway_releases() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    let mut case = Case::new(&waits, Presence::Present);
    case.jobs.insert(
        names[1].clone(),
        job(JobState::Failed, Some("2026-01-01T00:00:30Z")),
    );
    assert_eq!(verdict(&waits, &names, &case.facts()), Verdict::Release);
}

#[test]
fn past_the_gate_timeout_a_missing_or_unknown_image_reverts() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    for presence in [Presence::Missing, Presence::Unknown] {
        let mut case = Case::new(&waits, presence);
        case.now = at("2026-01-01T00:11:00Z");
        match verdict(&waits, &names, &case.facts()) {
            Verdict::Revert { reason, cause, .. } => {
                assert_eq!(cause, "timeout");
                assert!(reason.contains("gate timeout of 600s"), "{reason}")
            }
            other => panic!("expected a revert, got {other:?}"),
        }
    }
}

#[test]
fn a_refused_private_source_reverts_before_any_copy() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    let mut case = Case::new(&waits, Presence::Missing);
    case.refused.insert(
        waits[1].source.to_string(),
        "cannot be read anonymously".into(),
    );
    match verdict(&waits, &names, &case.facts()) {
        Verdict::Revert { cause, image, .. } => {
            assert_eq!(cause, "private_source");
            assert_eq!(image, "docker.io/library/nginx:1.27");
        }
        other => panic!("expected a revert, got {other:?}"),
    }
}

#[test]
fn a_copy_pending_pod_starts_its_copies_then_is_done() {
    let pod = gated_pod();
    let waits = waits_of(&pod);
    let names = job_names(&waits);
    let mut case = Case::new(&waits, Presence::Missing);
    assert_eq!(
        pending(&waits, &names, &case.facts()),
        Pending::Start(vec![0, 1])
    );
    for name in &names {
        case.jobs.insert(name.clone(), job(JobState::Running, None));
    }
    assert_eq!(pending(&waits, &names, &case.facts()), Pending::Done);
    let case = Case::new(&waits, Presence::Present);
    assert_eq!(pending(&waits, &names, &case.facts()), Pending::Done);
    let unknown = Case::new(&waits, Presence::Unknown);
    assert_eq!(
        pending(&waits, &names, &unknown.facts()),
        Pending::Start(vec![])
    );
    let mut late = Case::new(&waits, Presence::Missing);
    late.now = at("2026-01-01T00:11:00Z");
    assert_eq!(pending(&waits, &names, &late.facts()), Pending::GiveUp);
}
