//! What serve records on a pod, and the one trust rule the gate applies to
//! it: nothing a pod carries is taken as given. A copy is only ever wanted
//! for `(source, target_reference(source))`, with the admission's own
//! selection rules applied again to the recorded source (DESIGN §11).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::glob_match;
use super::inputs::Settings;
use super::outputs::SkipReason;
use super::select::{select, Selection};
use crate::image::{ImageRef, TargetRegistry};

/// The scheduling gate a pod waits at until every image it needs is in the target.
pub const GATE: &str = "privatize.io/mirror";
/// Label (value `"true"`) on every pod we gated, so the releaser watches a label selector.
pub const GATED_LABEL: &str = "privatize.io/gated";
/// Label (value `"true"`) on a pod that is not gated but whose images are
/// still to be copied (policies `always` and `exists`, pods with a `nodeName`):
/// the gate controller starts their copies once the pod exists.
pub const COPY_PENDING_LABEL: &str = "privatize.io/copy-pending";
/// Annotation: JSON object {container name: original reference as written}.
pub const ORIGINAL_IMAGES: &str = "privatize.io/original-images";
/// Annotation: `"true"` leaves the whole pod alone.
pub const SKIP_ANNOTATION: &str = "privatize.io/skip";

/// One image a pod waits for (or wants copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub container: String,
    /// The normalised source, re-derived: never taken from the pod as given.
    pub source: ImageRef,
    /// `target_reference(source)`.
    pub target: ImageRef,
}

/// What the gate makes of a pod carrying privatize's marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// serve's own: the images it waits for (never empty).
    Ours(Vec<Wait>),
    /// Nothing under this serve's target: another installation's pod. Left alone.
    Foreign,
    /// Marks serve would not have written (why): never released, reverted
    /// or copied for; the owner gets a Warning Event.
    Forged(String),
}

/// Why privatize leaves a whole pod alone, whatever its images: its namespace
/// is excluded or it is annotated `privatize.io/skip: "true"`.
pub fn exclusion(namespace: &str, pod: &Pod, settings: &Settings) -> Option<SkipReason> {
    if let Some(glob) = settings
        .exclude_namespaces
        .iter()
        .map(|glob| glob.trim())
        .find(|glob| !glob.is_empty() && glob_match(glob, namespace))
    {
        return Some(SkipReason::NamespaceExcluded(glob.to_string()));
    }
    let skip = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_ANNOTATION));
    skip.is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        .then_some(SkipReason::Annotated)
}

/// The recorded originals (container name → reference as written); an
/// error when the annotation is there but not a JSON object of strings.
pub fn originals(pod: &Pod) -> Result<BTreeMap<String, String>, String> {
    match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_IMAGES))
    {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|_| format!("annotation {ORIGINAL_IMAGES} is not a JSON object of strings")),
    }
}

/// Whether the pod carries privatize's gate.
pub fn is_gated(pod: &Pod) -> bool {
    gate_index(pod).is_some()
}

/// Where privatize's gate sits in `spec.schedulingGates`.
pub fn gate_index(pod: &Pod) -> Option<usize> {
    pod.spec
        .as_ref()?
        .scheduling_gates
        .as_ref()?
        .iter()
        .position(|g| g.name == GATE)
}

/// Whether the pod carries `label: "true"`.
pub fn has_label(pod: &Pod, label: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label))
        .is_some_and(|v| v == "true")
}

/// Whether `image` lies under this serve's target: its registry and, when
/// there is one, its prefix (another installation mirroring elsewhere in the
/// same registry keeps its own pods).
pub fn under_target(image: &ImageRef, target: &TargetRegistry) -> bool {
    image.host == target.host
        && (target.prefix.is_empty()
            || image
                .repository
                .strip_prefix(&target.prefix)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// Decides whether a pod with privatize's gate or copy-pending label is
/// serve's own, and what it waits for. Re-derives every record with the
/// admission's rules: a container under the target counts only when its
/// recorded original selects for mirroring and maps to exactly the image the
/// container has; on a copy-pending pod, containers still at a mirrorable
/// original count too (their copy is wanted).
pub fn claim(pod: &Pod, settings: &Settings) -> Claim {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let gated = is_gated(pod);
    let pending = has_label(pod, COPY_PENDING_LABEL);
    let Some(spec) = pod.spec.as_ref() else {
        return Claim::Foreign;
    };
    let containers: Vec<(&str, &str)> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| Some((c.name.as_str(), c.image.as_deref()?)))
        .collect();
    let ours: Vec<(&str, &str, ImageRef)> = containers
        .iter()
        .filter_map(|(name, image)| {
            let parsed = ImageRef::parse(image).ok()?;
            under_target(&parsed, &settings.target).then_some((*name, *image, parsed))
        })
        .collect();
    if let Some(reason) = exclusion(namespace, pod, settings) {
        return if ours.is_empty() && !pending {
            Claim::Foreign
        } else {
            Claim::Forged(format!(
                "{reason}, so privatize never gates or copies for this pod"
            ))
        };
    }
    let originals = match originals(pod) {
        Ok(originals) => originals,
        Err(_) if ours.is_empty() && !pending => return Claim::Foreign,
        Err(why) => return Claim::Forged(why),
    };
    let mut waits = Vec::new();
    for (name, image, mirrored) in &ours {
        let Some(original) = originals.get(*name) else {
            if gated {
                return Claim::Forged(format!(
                    "container {name}: {image} is under the target but privatize recorded no original for it"
                ));
            }
            continue;
        };
        match mirror(original, settings) {
            Some((source, target)) if &target == mirrored => waits.push(Wait {
                container: name.to_string(),
                source,
                target,
            }),
            Some((_, target)) => {
                return Claim::Forged(format!(
                    "container {name}: {image} is not where {original} is mirrored ({target})"
                ))
            }
            None => {
                return Claim::Forged(format!(
                    "container {name}: {original} is not an image this installation mirrors"
                ))
            }
        }
    }
    if pending {
        for (name, image) in &containers {
            if ours.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            if let Some((source, target)) = mirror(image, settings) {
                waits.push(Wait {
                    container: name.to_string(),
                    source,
                    target,
                });
            }
        }
    }
    if waits.is_empty() {
        Claim::Foreign
    } else {
        Claim::Ours(waits)
    }
}

/// The admission's selection of one reference: `(source, target)` when it is mirrored.
fn mirror(image: &str, settings: &Settings) -> Option<(ImageRef, ImageRef)> {
    match select(
        image,
        &settings.target,
        &settings.exclude,
        &settings.include_registries,
    ) {
        Selection::Mirror { source, target } => Some((source, target)),
        Selection::Leave(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TARGET: &str = "reg.example/mirror";

    fn settings() -> Settings {
        Settings {
            exclude_namespaces: vec!["kube-system".into()],
            ..Settings::new(TargetRegistry::parse(TARGET).unwrap())
        }
    }

    fn pod(namespace: &str, originals: serde_json::Value, containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": namespace,
                "labels": {"privatize.io/gated": "true"},
                "annotations": {"privatize.io/original-images": originals.to_string()}
            },
            "spec": {
                "schedulingGates": [{"name": "privatize.io/mirror"}],
                "containers": containers
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_record_that_re_derives_is_ours_with_the_re_derived_source() {
        let p = pod(
            "app",
            json!({"web": "nginx:1.27"}),
            json!([{"name": "web", "image": "reg.example/mirror/docker.io/library/nginx:1.27"}]),
        );
        match claim(&p, &settings()) {
            Claim::Ours(waits) => {
                assert_eq!(waits.len(), 1);
                assert_eq!(waits[0].source.to_string(), "docker.io/library/nginx:1.27");
                assert_eq!(
                    waits[0].target.to_string(),
                    "reg.example/mirror/docker.io/library/nginx:1.27"
                );
            }
            other => panic!("expected ours, got {other:?}"),
        }
    }

    #[test]
    fn an_attackers_source_recorded_for_a_victims_target_is_forged() {
        // The attack of issue 14: the mirror's v1 would be overwritten with evil.io/x.
        let p = pod(
            "app",
            json!({"c": "evil.io/x@sha256:1111111111111111111111111111111111111111111111111111111111111111"}),
            json!([{"name": "c", "image": "reg.example/mirror/docker.io/library/nginx:v1@sha256:1111111111111111111111111111111111111111111111111111111111111111"}]),
        );
        match claim(&p, &settings()) {
            Claim::Forged(why) => assert!(why.contains("is not where evil.io/x"), "{why}"),
            other => panic!("expected forged, got {other:?}"),
        }
    }

    #[test]
    fn a_gated_pod_in_an_excluded_namespace_or_with_an_excluded_source_is_forged() {
        let target =
            json!([{"name": "c", "image": "reg.example/mirror/docker.io/library/nginx:1"}]);
        let p = pod("kube-system", json!({"c": "nginx:1"}), target.clone());
        assert!(matches!(claim(&p, &settings()), Claim::Forged(_)));
        let excluding = Settings {
            exclude: vec!["docker.io".into()],
            ..settings()
        };
        let p = pod("app", json!({"c": "nginx:1"}), target);
        match claim(&p, &excluding) {
            Claim::Forged(why) => assert!(why.contains("not an image this installation mirrors")),
            other => panic!("expected forged, got {other:?}"),
        }
    }

    #[test]
    fn a_gate_on_an_image_under_the_target_without_a_record_is_forged() {
        let p = pod(
            "app",
            json!({}),
            json!([{"name": "c", "image": "reg.example/mirror/docker.io/library/nginx:1"}]),
        );
        assert!(matches!(claim(&p, &settings()), Claim::Forged(_)));
    }

    #[test]
    fn pods_under_another_target_or_prefix_are_foreign() {
        let p = pod(
            "app",
            json!({"c": "nginx:1"}),
            json!([{"name": "c", "image": "reg.example/other/docker.io/library/nginx:1"}]),
        );
        assert_eq!(claim(&p, &settings()), Claim::Foreign);
        let p = pod(
            "app",
            json!({"c": "nginx:1"}),
            json!([{"name": "c", "image": "other.example/mirror/docker.io/library/nginx:1"}]),
        );
        assert_eq!(claim(&p, &settings()), Claim::Foreign);
    }

    #[test]
    fn a_copy_pending_pod_wants_its_mirrorable_originals_copied() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "app", "labels": {"privatize.io/copy-pending": "true"}},
            "spec": {"containers": [
                {"name": "a", "image": "quay.io/org/a:1"},
                {"name": "b", "image": "localhost:5000/b:1"}
            ]}
        }))
        .unwrap();
        let s = Settings {
            exclude: vec!["localhost".into()],
            ..settings()
        };
        match claim(&p, &s) {
            Claim::Ours(waits) => {
                let sources: Vec<String> = waits.iter().map(|w| w.source.to_string()).collect();
                assert_eq!(sources, ["quay.io/org/a:1"]);
            }
            other => panic!("expected ours, got {other:?}"),
        }
    }

    #[test]
    fn an_unreadable_record_is_forged_when_images_are_under_the_target() {
        let mut p = pod(
            "app",
            json!({}),
            json!([{"name": "c", "image": "reg.example/mirror/docker.io/library/nginx:1"}]),
        );
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ORIGINAL_IMAGES.into(), "[1,2]".into());
        assert!(matches!(claim(&p, &settings()), Claim::Forged(_)));
    }
}
