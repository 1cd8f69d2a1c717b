//! The pod admission decision: which images are rewritten, gated or copied, as a JSON
//! Patch plus the copies to start. Pure: presence and the pull Secret come in as [`Facts`].

use std::collections::{BTreeMap, HashSet};

use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{json, Map, Value};

pub use super::inputs::{Access, Facts, Presence, Settings, DEFAULT_MAX_IMAGES_PER_POD};
pub use super::outputs::{
    Candidate, ContainerKind, Decision, ImageCopy, ImageOutcome, Outcome, SkipReason,
};
use super::pointer;
use super::record::exclusion;
pub use super::record::{COPY_PENDING_LABEL, GATE, GATED_LABEL, ORIGINAL_IMAGES, SKIP_ANNOTATION};
pub use super::select::{default_exclude, LeaveReason, PLACEHOLDER_IMAGES};
use super::select::{select, Selection};
use crate::cli::SwapPolicy;
use crate::image::ImageRef;

/// The subresource `kubectl debug` updates to add ephemeral containers.
const EPHEMERAL_SUBRESOURCE: &str = "ephemeralcontainers";

/// One container image the admission may change.
struct Slot<'a> {
    kind: ContainerKind,
    index: usize,
    name: &'a str,
    image: &'a str,
    selection: Selection,
}

/// What an admission looks at: the pod and its image slots.
struct Scope<'a> {
    pod: &'a Pod,
    ephemeral: bool,
    /// The pod names its node (`kubectl debug node/…`): the API refuses a
    /// scheduling gate there, so missing images get the `exists` answer.
    has_node: bool,
    /// Whether images that cannot be read anonymously may be mirrored here.
    private_sources: bool,
    slots: Vec<Slot<'a>>,
}

/// Images whose target presence the I/O layer must look up, one per target;
/// none when the pod is skipped outright or every image is left alone.
pub fn candidates(request: &AdmissionRequest<Pod>, settings: &Settings) -> Vec<Candidate> {
    let Ok(scope) = scope(request, settings) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    scope
        .slots
        .into_iter()
        .filter_map(|slot| match slot.selection {
            Selection::Mirror { source, target } if seen.insert(target.to_string()) => {
                Some(Candidate {
                    container: slot.name.to_string(),
                    source,
                    target,
                    original: slot.image.to_string(),
                    kind: slot.kind,
                    check_access: !scope.private_sources,
                })
            }
            _ => None,
        })
        .collect()
}

/// Decides a pod admission from the request, the settings and the looked-up facts.
///
/// Pod CREATE: `containers` and `initContainers`. UPDATE of `pods/ephemeralcontainers`:
/// only the ephemeral containers not in the old object, never gated. Anything else is
/// skipped. One image of unknown presence leaves the whole pod unchanged, with a warning;
/// so does a source of unknown anonymous access where private sources are not allowed,
/// and a private one there is left alone. A pod that names its node is never gated.
/// Copies of a new pod are started by the gate controller once the pod exists (a pod a
/// later admission stage refuses leaves none); only an ephemeral container's copy is
/// started from here. An admission `dryRun` gets the same patch but no copies;
/// `settings.dry_run` gets neither, while `images` and `gated` still say what would
/// have happened.
pub fn decide(request: &AdmissionRequest<Pod>, settings: &Settings, facts: &Facts) -> Decision {
    let mut scope = match scope(request, settings) {
        Ok(scope) => scope,
        Err(reason) => {
            let warnings = match reason {
                SkipReason::TooManyImages { .. } => vec![format!("{reason}: pod left unchanged")],
                _ => Vec::new(),
            };
            return Decision {
                skipped: Some(reason),
                warnings,
                ..Decision::default()
            };
        }
    };
    let mut decision = Decision::default();
    if settings.require_pull_secret && facts.pull_secret.is_none() && !scope.ephemeral {
        let mut left = false;
        for slot in &mut scope.slots {
            if matches!(slot.selection, Selection::Mirror { .. }) {
                slot.selection = Selection::Leave(LeaveReason::NoPullSecret);
                left = true;
            }
        }
        if left {
            decision.warnings.push(
                "the namespace has no managed pull Secret (not enabled for ECR credentials), so its nodes could not pull mirrored images: left unchanged (PRIVATIZE_REQUIRE_PULL_SECRET)".into(),
            );
        }
    }
    if !scope.private_sources {
        let mut unknown = Vec::new();
        for slot in &mut scope.slots {
            let Selection::Mirror { source, .. } = &slot.selection else {
                continue;
            };
            match facts.access_of(source) {
                Access::Public => {}
                Access::Private => {
                    decision.warnings.push(format!(
                        "container {}: {} cannot be read anonymously and namespace may not mirror private images: left unchanged",
                        slot.name, slot.image
                    ));
                    slot.selection = Selection::Leave(LeaveReason::PrivateSource);
                }
                Access::Unknown => unknown.push(source.to_string()),
            }
        }
        if !unknown.is_empty() {
            unknown.dedup();
            for source in unknown {
                decision.warnings.push(format!(
                    "could not tell whether {source} can be read anonymously: pod left unchanged"
                ));
            }
            decision.images = scope
                .slots
                .iter()
                .map(|slot| image_outcome(slot, Outcome::SourceUnknown))
                .collect();
            return decision;
        }
    }
    for slot in &scope.slots {
        if let Selection::Leave(LeaveReason::Unparsable(why)) = &slot.selection {
            decision
                .warnings
                .push(format!("container {}: {why}: left unchanged", slot.name));
        }
    }
    let mut unknown: Vec<String> = scope
        .slots
        .iter()
        .filter_map(|slot| match &slot.selection {
            Selection::Mirror { target, .. } if facts.presence_of(target) == Presence::Unknown => {
                Some(target.to_string())
            }
            _ => None,
        })
        .collect();
    let mut seen = HashSet::new();
    unknown.retain(|target| seen.insert(target.clone()));
    if !unknown.is_empty() {
        for target in unknown {
            decision.warnings.push(format!(
                "presence of {target} in the target registry is unknown: pod left unchanged"
            ));
        }
        decision.images = scope
            .slots
            .iter()
            .map(|slot| image_outcome(slot, Outcome::PresenceUnknown))
            .collect();
        return decision;
    }

    let secret_on_pod = facts
        .pull_secret
        .as_deref()
        .is_none_or(|name| lists_pull_secret(scope.pod, name));
    let mut copied = HashSet::new();
    for slot in &scope.slots {
        let outcome = match &slot.selection {
            Selection::Leave(reason) => Outcome::LeftAlone(reason.clone()),
            Selection::Mirror { source, target } => {
                let present = facts.presence_of(target) == Presence::Present;
                if !present && scope.ephemeral && copied.insert(target.to_string()) {
                    decision.copies.push(ImageCopy {
                        source: source.clone(),
                        target: target.clone(),
                    });
                }
                let policy = if scope.has_node {
                    SwapPolicy::Exists
                } else {
                    settings.swap_policy
                };
                let outcome = slot_outcome(scope.ephemeral, present, secret_on_pod, policy);
                if outcome.rewrites() {
                    let pinned = facts
                        .digests
                        .get(&target.to_string())
                        .filter(|_| settings.pin_digests && present && target.digest.is_none())
                        .map(|digest| ImageRef {
                            digest: Some(digest.clone()),
                            ..target.clone()
                        });
                    decision
                        .patch
                        .push(PatchOperation::Replace(ReplaceOperation {
                            path: pointer([
                                "spec",
                                slot.kind.field(),
                                &slot.index.to_string(),
                                "image",
                            ]),
                            value: Value::String(pinned.as_ref().unwrap_or(target).to_string()),
                        }));
                }
                outcome
            }
        };
        if outcome == Outcome::KeptNoPullSecret {
            decision.warnings.push(format!(
                "container {}: the pod lacks the pull secret for the target registry: original image kept",
                slot.name
            ));
        }
        decision.images.push(image_outcome(slot, outcome));
    }
    decision.gated = decision.images.iter().any(|i| i.outcome == Outcome::Gated);
    decision.copy_pending = !scope.ephemeral
        && !decision.gated
        && decision.images.iter().any(|i| {
            matches!(
                i.outcome,
                Outcome::KeptUntilCopied | Outcome::RewrittenBeforeCopy
            )
        });
    // The ephemeralcontainers subresource keeps only ephemeral container changes, so
    // pod-level fields are patched on CREATE only.
    if !scope.ephemeral {
        pod_level_ops(&mut decision, &scope, facts);
    }
    if request.dry_run || settings.dry_run {
        decision.copies.clear();
    }
    if settings.dry_run {
        decision.patch.clear();
    }
    decision
}

fn slot_outcome(
    ephemeral: bool,
    present: bool,
    secret_on_pod: bool,
    policy: SwapPolicy,
) -> Outcome {
    match (ephemeral, present, policy) {
        (true, true, _) if !secret_on_pod => Outcome::KeptNoPullSecret,
        (_, true, _) => Outcome::Rewritten,
        (true, false, _) | (false, false, SwapPolicy::Exists) => Outcome::KeptUntilCopied,
        (false, false, SwapPolicy::Gate) => Outcome::Gated,
        (false, false, SwapPolicy::Always) => Outcome::RewrittenBeforeCopy,
    }
}

fn image_outcome(slot: &Slot<'_>, outcome: Outcome) -> ImageOutcome {
    let (target, outcome) = match &slot.selection {
        Selection::Mirror { target, .. } => (Some(target.clone()), outcome),
        Selection::Leave(reason) => (None, Outcome::LeftAlone(reason.clone())),
    };
    ImageOutcome {
        container: slot.name.to_string(),
        kind: slot.kind,
        original: slot.image.to_string(),
        target,
        outcome,
    }
}

/// The original-images annotation, the gate and its label, and the pull Secret.
fn pod_level_ops(decision: &mut Decision, scope: &Scope<'_>, facts: &Facts) {
    let meta = &scope.pod.metadata;
    let spec = scope.pod.spec.as_ref();
    // `decision.images` holds one outcome per slot, in slot order.
    let rewritten: Vec<(&str, &str)> = scope
        .slots
        .iter()
        .zip(&decision.images)
        .filter(|(_, image)| image.outcome.rewrites())
        .map(|(slot, _)| (slot.name, slot.image))
        .collect();
    let mut ops = Vec::new();
    if !rewritten.is_empty() {
        let existing = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ORIGINAL_IMAGES));
        let mut merged = match existing.map(|text| serde_json::from_str::<Map<String, Value>>(text))
        {
            Some(Ok(map)) => map,
            Some(Err(_)) => {
                decision.warnings.push(format!(
                    "annotation {ORIGINAL_IMAGES} is not a JSON object: replaced"
                ));
                Map::new()
            }
            None => Map::new(),
        };
        let before = merged.clone();
        for (name, image) in rewritten {
            merged.insert(name.to_string(), Value::String(image.to_string()));
        }
        if existing.is_none() || merged != before {
            let value = Value::Object(merged).to_string();
            add_map_entry(
                &mut ops,
                "annotations",
                meta.annotations.as_ref(),
                ORIGINAL_IMAGES,
                value,
            );
        }
    }
    if decision.gated {
        let gates = spec.and_then(|s| s.scheduling_gates.as_ref());
        if !gates.is_some_and(|g| g.iter().any(|gate| gate.name == GATE)) {
            add_list_entry(
                &mut ops,
                "schedulingGates",
                gates.is_some(),
                json!({ "name": GATE }),
            );
        }
    }
    let label = if decision.gated {
        Some(GATED_LABEL)
    } else if decision.copy_pending {
        Some(COPY_PENDING_LABEL)
    } else {
        None
    };
    if let Some(label) = label {
        let labels = meta.labels.as_ref();
        if labels.and_then(|l| l.get(label)).map(String::as_str) != Some("true") {
            add_map_entry(&mut ops, "labels", labels, label, "true".to_string());
        }
    }
    let uses_target = decision.images.iter().any(|image| {
        image.outcome.rewrites() || image.outcome == Outcome::LeftAlone(LeaveReason::InTarget)
    });
    if let Some(name) = facts.pull_secret.as_deref() {
        if uses_target && !lists_pull_secret(scope.pod, name) {
            let secrets = spec.and_then(|s| s.image_pull_secrets.as_ref());
            add_list_entry(
                &mut ops,
                "imagePullSecrets",
                secrets.is_some(),
                json!({ "name": name }),
            );
        }
    }
    decision.patch.extend(ops);
}

/// Adds `key: value` under `/metadata/<map>`, creating the map when absent.
fn add_map_entry(
    ops: &mut Vec<PatchOperation>,
    map: &str,
    existing: Option<&BTreeMap<String, String>>,
    key: &str,
    value: String,
) {
    let (path, value) = match existing {
        Some(_) => (pointer(["metadata", map, key]), Value::String(value)),
        None => (pointer(["metadata", map]), json!({ key: value })),
    };
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

/// Appends `value` to `/spec/<list>`, creating the list when absent.
fn add_list_entry(ops: &mut Vec<PatchOperation>, list: &str, exists: bool, value: Value) {
    let (path, value) = if exists {
        (pointer(["spec", list, "-"]), value)
    } else {
        (pointer(["spec", list]), Value::Array(vec![value]))
    };
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

fn lists_pull_secret(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .is_some_and(|list| list.iter().any(|s| s.name == name))
}

/// The pod and the image slots this admission may change, or why it is skipped.
fn scope<'a>(
    request: &'a AdmissionRequest<Pod>,
    settings: &Settings,
) -> Result<Scope<'a>, SkipReason> {
    let sub_resource = request.sub_resource.as_deref().filter(|s| !s.is_empty());
    let ephemeral = match (&request.operation, sub_resource) {
        (Operation::Create, None) => false,
        (Operation::Update, Some(EPHEMERAL_SUBRESOURCE)) => true,
        (operation, sub_resource) => {
            let operation = match operation {
                Operation::Create => "CREATE",
                Operation::Update => "UPDATE",
                Operation::Delete => "DELETE",
                Operation::Connect => "CONNECT",
            };
            return Err(SkipReason::Operation(match sub_resource {
                Some(sub) => format!("{operation} pods/{sub}"),
                None => operation.to_string(),
            }));
        }
    };
    let pod = request.object.as_ref().ok_or(SkipReason::NoObject)?;
    let namespace = request
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    if let Some(reason) = exclusion(namespace, pod, settings) {
        return Err(reason);
    }
    let mut images: Vec<(ContainerKind, usize, &str, Option<&str>)> = Vec::new();
    if let Some(spec) = &pod.spec {
        if ephemeral {
            let old = request.old_object.as_ref().ok_or(SkipReason::NoObject)?;
            let old_names: HashSet<&str> = old
                .spec
                .iter()
                .flat_map(|s| s.ephemeral_containers.iter().flatten())
                .map(|c| c.name.as_str())
                .collect();
            for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
                if !old_names.contains(c.name.as_str()) {
                    images.push((ContainerKind::Ephemeral, i, &c.name, c.image.as_deref()));
                }
            }
        } else {
            for (i, c) in spec.containers.iter().enumerate() {
                images.push((ContainerKind::Container, i, &c.name, c.image.as_deref()));
            }
            for (i, c) in spec.init_containers.iter().flatten().enumerate() {
                images.push((ContainerKind::Init, i, &c.name, c.image.as_deref()));
            }
        }
    }
    let slots = images
        .into_iter()
        .filter_map(|(kind, index, name, image)| {
            let image = image?;
            let selection = select(
                image,
                &settings.target,
                &settings.exclude,
                &settings.include_registries,
            );
            Some(Slot {
                kind,
                index,
                name,
                image,
                selection,
            })
        })
        .collect::<Vec<_>>();
    let distinct: HashSet<String> = slots
        .iter()
        .filter_map(|slot| match &slot.selection {
            Selection::Mirror { target, .. } => Some(target.to_string()),
            Selection::Leave(_) => None,
        })
        .collect();
    if distinct.len() > settings.max_images_per_pod {
        return Err(SkipReason::TooManyImages {
            count: distinct.len(),
            max: settings.max_images_per_pod,
        });
    }
    let has_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    Ok(Scope {
        pod,
        ephemeral,
        has_node,
        private_sources: settings.private_sources_allowed(namespace),
        slots,
    })
}
