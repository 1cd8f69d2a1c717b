//! Pure: what the gate controller does with one gated pod. Which images it
//! waits for, whether to release, revert or wait, and the guarded JSON
//! Patches that do it (each `test`s the gate first, so two replicas can
//! never release twice or undo each other).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use json_patch::{PatchOperation, RemoveOperation, ReplaceOperation, TestOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::jobs::JobState;
use crate::image::{ImageRef, TargetRegistry};
use crate::mutate::pods::{Presence, GATE, GATED_LABEL, ORIGINAL_IMAGES};

/// One image a gated pod waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub container: String,
    pub source: ImageRef,
    pub target: ImageRef,
}

/// What to do with a gated pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every image is in the target: remove the gate.
    Release,
    /// The copy failed for good: images back to the originals, gate removed.
    Revert {
        reason: String,
        image: String,
        /// A fixed label for metrics: `job_failed` or `timeout`.
        cause: &'static str,
    },
    /// Keep waiting.
    Wait,
}

/// The images a gated pod waits for: containers (and init containers) whose
/// image lies under this serve's target (registry and prefix: another
/// install mirroring elsewhere keeps its own pods) and whose original is recorded.
pub fn waits(pod: &Pod, target: &TargetRegistry) -> Vec<Wait> {
    let originals = originals(pod);
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut out = Vec::new();
    for c in containers {
        let (Some(image), Some(original)) = (c.image.as_deref(), originals.get(&c.name)) else {
            continue;
        };
        let (Ok(mirrored), Ok(source)) = (ImageRef::parse(image), ImageRef::parse(original)) else {
            continue;
        };
        let under_prefix = target.prefix.is_empty()
            || mirrored
                .repository
                .strip_prefix(&target.prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        if mirrored.host == target.host && under_prefix {
            out.push(Wait {
                container: c.name.clone(),
                source,
                target: mirrored,
            });
        }
    }
    out
}

/// The original references recorded at admission (container name → reference).
pub fn originals(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_IMAGES))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Whether the pod still carries privatize's gate.
pub fn is_gated(pod: &Pod) -> bool {
    gate_index(pod).is_some()
}

fn gate_index(pod: &Pod) -> Option<usize> {
    pod.spec
        .as_ref()?
        .scheduling_gates
        .as_ref()?
        .iter()
        .position(|g| g.name == GATE)
}

/// Decides a gated pod's fate from fresh presence answers (by target
/// reference), the state of each copy Job (by Job name) and how long it waited.
pub fn verdict(
    waits: &[(Wait, String)],
    presence: &HashMap<String, Presence>,
    jobs: &HashMap<String, JobState>,
    waited: Duration,
    gate_timeout: Duration,
) -> Verdict {
    let missing: Vec<&(Wait, String)> = waits
        .iter()
        .filter(|(w, _)| presence.get(&w.target.to_string()) != Some(&Presence::Present))
        .collect();
    if missing.is_empty() {
        return Verdict::Release;
    }
    for (wait, job) in &missing {
        if jobs.get(job) == Some(&JobState::Failed) {
            return Verdict::Revert {
                reason: format!("copy Job {job} failed"),
                image: wait.source.to_string(),
                cause: "job_failed",
            };
        }
    }
    if waited > gate_timeout {
        let (wait, job) = missing[0];
        return Verdict::Revert {
            reason: format!(
                "not mirrored within the gate timeout of {}s (copy Job {job})",
                gate_timeout.as_secs()
            ),
            image: wait.source.to_string(),
            cause: "timeout",
        };
    }
    Verdict::Wait
}

/// Removes the gate and the label, guarded by a `test` that the gate is
/// still where we saw it. `None` when the pod carries no gate.
pub fn release_patch(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let mut ops = gate_guard(pod)?;
    ops.extend(label_removal(pod));
    Some(ops)
}

/// Sets every waited image back to its original, then removes the gate and label.
pub fn revert_patch(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let mut ops = gate_guard(pod)?;
    let originals = originals(pod);
    let spec = pod.spec.as_ref()?;
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (field, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let (Some(current), Some(original)) = (c.image.as_deref(), originals.get(&c.name))
            else {
                continue;
            };
            if current == original {
                continue;
            }
            let path = format!("/spec/{field}/{i}/image");
            ops.push(PatchOperation::Test(TestOperation {
                path: pointer(&path),
                value: Value::String(current.to_string()),
            }));
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: pointer(&path),
                value: Value::String(original.clone()),
            }));
        }
    }
    ops.extend(label_removal(pod));
    Some(ops)
}

fn gate_guard(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let index = gate_index(pod)?;
    let gates = format!("/spec/schedulingGates/{index}");
    Some(vec![
        PatchOperation::Test(TestOperation {
            path: pointer(&format!("{gates}/name")),
            value: Value::String(GATE.to_string()),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&gates),
        }),
    ])
}

fn label_removal(pod: &Pod) -> Option<PatchOperation> {
    let labels = pod.metadata.labels.as_ref()?;
    labels.contains_key(GATED_LABEL).then(|| {
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&format!("/metadata/labels/{}", escape(GATED_LABEL))),
        })
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn pointer(path: &str) -> json_patch::jsonptr::PointerBuf {
    json_patch::jsonptr::PointerBuf::parse(path).expect("paths built here are valid JSON pointers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gated_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "app",
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

    fn apply(pod: &Pod, ops: Vec<PatchOperation>) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut value, &ops).unwrap();
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_gated_pod_waits_for_its_rewritten_images_only() {
        let w = waits(&gated_pod(), &TargetRegistry::parse("reg.example").unwrap());
        let pairs: Vec<(String, String)> = w
            .iter()
            .map(|w| (w.container.clone(), w.source.to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "init".to_string(),
                    "docker.io/library/busybox:latest".to_string()
                ),
                (
                    "app".to_string(),
                    "docker.io/library/nginx:1.27".to_string()
                )
            ]
        );
    }

    #[test]
    fn pods_mirrored_under_another_prefix_are_not_ours() {
        let ours = TargetRegistry::parse("reg.example/docker.io").unwrap();
        assert_eq!(waits(&gated_pod(), &ours).len(), 2);
        let other = TargetRegistry::parse("reg.example/mirror").unwrap();
        assert!(waits(&gated_pod(), &other).is_empty());
        let prefix_of_a_name = TargetRegistry::parse("reg.example/docker").unwrap();
        assert!(waits(&gated_pod(), &prefix_of_a_name).is_empty());
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
        assert!(!released
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(GATED_LABEL));
        assert_eq!(released.metadata.labels.as_ref().unwrap()["app"], "web");
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
    fn revert_restores_every_original_and_removes_the_gate() {
        let pod = gated_pod();
        let reverted = apply(&pod, revert_patch(&pod).unwrap());
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
    }

    fn pending() -> Vec<(Wait, String)> {
        waits(&gated_pod(), &TargetRegistry::parse("reg.example").unwrap())
            .into_iter()
            .map(|w| {
                let job = super::super::jobs::job_name(&w.source, &w.target);
                (w, job)
            })
            .collect()
    }

    #[test]
    fn verdicts_follow_presence_jobs_and_time() {
        let w = pending();
        let all_present: HashMap<String, Presence> = w
            .iter()
            .map(|(w, _)| (w.target.to_string(), Presence::Present))
            .collect();
        let minute = Duration::from_secs(60);
        let none = HashMap::new();
        assert_eq!(
            verdict(&w, &all_present, &none, minute, minute * 10),
            Verdict::Release
        );
        let mut one_missing = all_present.clone();
        one_missing.insert(w[1].0.target.to_string(), Presence::Missing);
        assert_eq!(
            verdict(&w, &one_missing, &none, minute, minute * 10),
            Verdict::Wait
        );
        // An unknown answer is not presence.
        let mut unknown = all_present.clone();
        unknown.insert(w[0].0.target.to_string(), Presence::Unknown);
        assert_eq!(
            verdict(&w, &unknown, &none, minute, minute * 10),
            Verdict::Wait
        );
        let failed = HashMap::from([(w[1].1.clone(), JobState::Failed)]);
        match verdict(&w, &one_missing, &failed, minute, minute * 10) {
            Verdict::Revert {
                reason,
                image,
                cause,
            } => {
                assert_eq!(cause, "job_failed");
                assert_eq!(image, "docker.io/library/nginx:1.27");
                assert!(reason.contains(&w[1].1), "{reason}");
            }
            other => panic!("expected a revert, got {other:?}"),
        }
        // A failed Job of an image that landed anyway does not revert.
        assert_eq!(
            verdict(&w, &all_present, &failed, minute, minute * 10),
            Verdict::Release
        );
        match verdict(&w, &one_missing, &none, minute * 11, minute * 10) {
            Verdict::Revert { reason, cause, .. } => {
                assert_eq!(cause, "timeout");
                assert!(reason.contains("gate timeout of 600s"), "{reason}")
            }
            other => panic!("expected a revert, got {other:?}"),
        }
    }
}
