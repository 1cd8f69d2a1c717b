//! The pod admission decision (pure), from AdmissionReview fixtures in
//! tests/data/admission: each patch is applied to the request object as the
//! apiserver would, and the resulting pod is checked.

use std::collections::HashMap;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use privatize::cli::SwapPolicy;
use privatize::image::TargetRegistry;
use privatize::mutate::pods::{
    candidates, decide, default_exclude, Decision, Facts, LeaveReason, Outcome, Presence, Settings,
    SkipReason,
};
use privatize::mutate::record::{claim, Claim};
use serde_json::{json, Value};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const PULL_SECRET: &str = "privatize-ecr";

fn settings() -> Settings {
    Settings {
        // Anonymous access is a fact of its own tests (private_sources.rs).
        private_source_namespaces: vec!["*".into()],
        exclude_namespaces: vec!["kube-system".into(), "privatize".into()],
        ..Settings::new(TargetRegistry::parse(ECR).unwrap())
    }
}

fn with_policy(swap_policy: SwapPolicy) -> Settings {
    Settings {
        swap_policy,
        ..settings()
    }
}

/// The fixture's AdmissionReview as JSON.
fn review(case: &str) -> Value {
    let path = format!(
        "{}/tests/data/admission/{case}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn request(review: &Value) -> AdmissionRequest<Pod> {
    let review: AdmissionReview<Pod> = serde_json::from_value(review.clone()).unwrap();
    review.try_into().unwrap()
}

/// Every candidate image of the request at one presence.
fn all(review: &Value, settings: &Settings, presence: Presence) -> Facts {
    Facts {
        presence: candidates(&request(review), settings)
            .into_iter()
            .map(|c| (c.target.to_string(), presence))
            .collect(),
        pull_secret: None,
        access: Default::default(),
        digests: Default::default(),
    }
}

/// The review with its request object patched (fails the test if the patch does not apply).
fn patched(review: &Value, patch: &[PatchOperation]) -> Value {
    let mut review = review.clone();
    json_patch::patch(&mut review["request"]["object"], patch).expect("patch applies");
    review
}

/// Decides a fixture and returns the decision and the resulting pod object.
fn run(case: &str, settings: &Settings, facts: &Facts) -> (Decision, Value) {
    let review = review(case);
    let decision = decide(&request(&review), settings, facts);
    let pod = patched(&review, &decision.patch)["request"]["object"].clone();
    (decision, pod)
}

fn images(pod: &Value, field: &str) -> Vec<(String, String)> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let image = c["image"].as_str().unwrap_or_default();
            (c["name"].as_str().unwrap().to_string(), image.to_string())
        })
        .collect()
}

fn image(pod: &Value, name: &str) -> String {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| images(pod, field))
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .1
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

fn gates(pod: &Value) -> Vec<String> {
    names(&pod["spec"]["schedulingGates"])
}

fn pull_secrets(pod: &Value) -> Vec<String> {
    names(&pod["spec"]["imagePullSecrets"])
}

/// The original-images annotation parsed as JSON (`null` when absent).
fn original_images(pod: &Value) -> Value {
    match pod["metadata"]["annotations"]["privatize.io/original-images"].as_str() {
        Some(text) => serde_json::from_str(text).expect("annotation is JSON"),
        None => Value::Null,
    }
}

fn gated_label(pod: &Value) -> Option<&str> {
    pod["metadata"]["labels"]["privatize.io/gated"].as_str()
}

/// The copies the gate controller starts once the admitted pod exists: what
/// the gate's trust rule (`record::claim`) finds on the patched pod, less the
/// images already present. The admission itself starts none for a new pod.
fn wanted(
    review: &Value,
    pod: &Value,
    settings: &Settings,
    facts: &Facts,
) -> Vec<(String, String)> {
    let mut pod: Pod = serde_json::from_value(pod.clone()).unwrap();
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = review["request"]["namespace"].as_str().map(String::from);
    }
    let mut wanted: Vec<(String, String)> = match claim(&pod, settings) {
        Claim::Ours(waits) => waits
            .into_iter()
            .filter(|w| facts.presence_of(&w.target) != Presence::Present)
            .map(|w| (w.source.to_string(), w.target.to_string()))
            .collect(),
        Claim::Foreign => Vec::new(),
        Claim::Forged(why) => panic!("the gate refuses what the admission wrote: {why}"),
    };
    wanted.sort();
    wanted.dedup();
    wanted
}

/// The copies the admission starts itself (an ephemeral container's only).
fn copies(decision: &Decision) -> Vec<(String, String)> {
    decision
        .copies
        .iter()
        .map(|c| (c.source.to_string(), c.target.to_string()))
        .collect()
}

fn outcome(decision: &Decision, container: &str) -> Outcome {
    decision
        .images
        .iter()
        .find(|i| i.container == container)
        .unwrap_or_else(|| panic!("no outcome for {container}"))
        .outcome
        .clone()
}

#[test]
fn containers_and_init_containers_are_rewritten_gated_and_copied() {
    let review = review("create_containers_and_init");
    let settings = settings();
    let (decision, pod) = run(
        "create_containers_and_init",
        &settings,
        &all(&review, &settings, Presence::Missing),
    );
    let nginx = format!("{ECR}/docker.io/library/nginx:1.27");
    let exporter = format!("{ECR}/quay.io/prometheus/node-exporter:v1.8.2");
    let busybox = format!("{ECR}/docker.io/library/busybox:latest");
    let envoy = format!("{ECR}/ghcr.io/envoyproxy/envoy:v1.31.0");
    assert_eq!(
        images(&pod, "containers"),
        [
            ("app".into(), nginx.clone()),
            ("metrics".into(), exporter.clone())
        ]
    );
    assert_eq!(
        images(&pod, "initContainers"),
        [
            ("migrate".into(), busybox.clone()),
            ("proxy".into(), envoy.clone())
        ]
    );
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(gates(&pod), ["privatize.io/mirror"]);
    assert_eq!(gated_label(&pod), Some("true"));
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert_eq!(
        original_images(&pod),
        json!({
            "app": "nginx:1.27",
            "metrics": "quay.io/prometheus/node-exporter:v1.8.2",
            "migrate": "busybox",
            "proxy": "ghcr.io/envoyproxy/envoy:v1.31.0",
        })
    );
    assert!(decision.gated);
    assert_eq!(decision.skipped, None);
    assert!(decision.copies.is_empty(), "no Job before the pod exists");
    let facts = all(&review, &settings, Presence::Missing);
    let mut want = vec![
        ("docker.io/library/nginx:1.27".to_string(), nginx),
        ("quay.io/prometheus/node-exporter:v1.8.2".into(), exporter),
        ("docker.io/library/busybox:latest".into(), busybox),
        ("ghcr.io/envoyproxy/envoy:v1.31.0".into(), envoy),
    ];
    want.sort();
    assert_eq!(wanted(&review, &pod, &settings, &facts), want);
    assert!(decision.images.iter().all(|i| i.outcome == Outcome::Gated));
    assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
    // The patched object is still a valid Pod.
    serde_json::from_value::<Pod>(pod).unwrap();
}

#[test]
fn swap_policy_and_presence_decide_image_gate_and_copy() {
    // (policy, presence, image rewritten, gated, copy started, outcome)
    let table = [
        (
            SwapPolicy::Gate,
            Presence::Present,
            true,
            false,
            false,
            Outcome::Rewritten,
        ),
        (
            SwapPolicy::Gate,
            Presence::Missing,
            true,
            true,
            true,
            Outcome::Gated,
        ),
        (
            SwapPolicy::Always,
            Presence::Present,
            true,
            false,
            false,
            Outcome::Rewritten,
        ),
        (
            SwapPolicy::Always,
            Presence::Missing,
            true,
            false,
            true,
            Outcome::RewrittenBeforeCopy,
        ),
        (
            SwapPolicy::Exists,
            Presence::Present,
            true,
            false,
            false,
            Outcome::Rewritten,
        ),
        (
            SwapPolicy::Exists,
            Presence::Missing,
            false,
            false,
            true,
            Outcome::KeptUntilCopied,
        ),
    ];
    let review = review("create_containers_and_init");
    for (policy, presence, rewritten, gated, copied, expected) in table {
        let case = format!("{policy:?} x {presence:?}");
        let settings = with_policy(policy);
        let facts = all(&review, &settings, presence);
        let (decision, pod) = run("create_containers_and_init", &settings, &facts);
        let app = image(&pod, "app");
        let want = if rewritten {
            format!("{ECR}/docker.io/library/nginx:1.27")
        } else {
            "nginx:1.27".to_string()
        };
        assert_eq!(app, want, "{case}");
        assert_eq!(outcome(&decision, "app"), expected, "{case}");
        assert_eq!(decision.gated, gated, "{case}");
        assert_eq!(!gates(&pod).is_empty(), gated, "{case}");
        assert_eq!(gated_label(&pod).is_some(), gated, "{case}");
        assert!(
            decision.copies.is_empty(),
            "{case}: no Job before the pod exists"
        );
        assert_eq!(
            wanted(&review, &pod, &settings, &facts).len(),
            if copied { 4 } else { 0 },
            "{case}"
        );
        // Not gated but still to be copied: labelled for the gate controller.
        assert_eq!(
            pod["metadata"]["labels"]["privatize.io/copy-pending"] == "true",
            copied && !gated,
            "{case}"
        );
        let annotated = original_images(&pod);
        if rewritten {
            assert_eq!(annotated["app"], "nginx:1.27", "{case}");
        } else {
            assert_eq!(annotated, Value::Null, "{case}");
            let paths: Vec<&str> = decision.patch.iter().map(|op| op.path().as_str()).collect();
            let label_only: &[&str] = if copied {
                &["/metadata/labels/privatize.io~1copy-pending"]
            } else {
                &[]
            };
            assert_eq!(paths, label_only, "{case}");
        }
    }
}

#[test]
fn one_unknown_presence_leaves_the_whole_pod_unchanged() {
    let review = review("create_containers_and_init");
    let settings = settings();
    let mut facts = all(&review, &settings, Presence::Present);
    let envoy = format!("{ECR}/ghcr.io/envoyproxy/envoy:v1.31.0");
    facts.presence.insert(envoy.clone(), Presence::Unknown);
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    assert!(decision.patch.is_empty());
    assert!(decision.copies.is_empty());
    assert!(!decision.gated);
    assert_eq!(image(&pod, "proxy"), "ghcr.io/envoyproxy/envoy:v1.31.0");
    assert_eq!(
        decision.warnings,
        [format!(
            "presence of {envoy} in the target registry is unknown: pod left unchanged"
        )]
    );
    assert!(decision
        .images
        .iter()
        .all(|i| i.outcome == Outcome::PresenceUnknown));

    // A target missing from the map counts as unknown too.
    facts.presence.remove(&envoy);
    let (decision, _) = run("create_containers_and_init", &settings, &facts);
    assert!(decision.patch.is_empty() && decision.copies.is_empty());
    assert_eq!(decision.warnings.len(), 1);
}

#[test]
fn tag_digest_and_digest_only_references_keep_tag_and_digest() {
    let review = review("create_tag_digest_references");
    let settings = settings();
    let facts = all(&review, &settings, Presence::Missing);
    let (_, pod) = run("create_tag_digest_references", &settings, &facts);
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    assert_eq!(image(&pod, "tagged"), format!("{ECR}/quay.io/org/app:1.2"));
    assert_eq!(
        image(&pod, "pinned"),
        format!("{ECR}/quay.io/org/app:1.2@sha256:{a}")
    );
    assert_eq!(
        image(&pod, "digest-only"),
        format!("{ECR}/registry.k8s.io/pause@sha256:{b}")
    );
    assert!(wanted(&review, &pod, &settings, &facts).contains(&(
        format!("registry.k8s.io/pause@sha256:{b}"),
        format!("{ECR}/registry.k8s.io/pause@sha256:{b}")
    )));
    assert_eq!(
        original_images(&pod)["pinned"],
        format!("quay.io/org/app:1.2@sha256:{a}")
    );
}

#[path = "mutate_pods/arbitrary.rs"]
mod arbitrary;
#[path = "mutate_pods/bounds.rs"]
mod bounds;
#[path = "mutate_pods/pod_fields.rs"]
mod pod_fields;
#[path = "mutate_pods/scope.rs"]
mod scope;
#[path = "mutate_pods/selection.rs"]
mod selection;

#[test]
fn pin_digests_rewrites_a_present_tag_to_the_copy_it_was_admitted_with() {
    let review = review("create_containers_and_init");
    let mut settings = settings();
    let mut facts = all(&review, &settings, Presence::Present);
    let nginx = format!("{ECR}/docker.io/library/nginx:1.27");
    let digest = format!("sha256:{}", "a".repeat(64));
    facts.digests.insert(nginx.clone(), digest.clone());

    // Off (the default): the tag, whatever the digest.
    let (_, pod) = run("create_containers_and_init", &settings, &facts);
    assert_eq!(image(&pod, "app"), nginx);

    // On: the tag at the digest the copy has; an image whose digest was not
    // read keeps its tag.
    settings.pin_digests = true;
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    assert_eq!(image(&pod, "app"), format!("{nginx}@{digest}"));
    assert_eq!(
        image(&pod, "metrics"),
        format!("{ECR}/quay.io/prometheus/node-exporter:v1.8.2")
    );
    assert!(gates(&pod).is_empty());
    // The record keeps what was written, so the tag is still followed.
    assert_eq!(original_images(&pod)["app"], "nginx:1.27");
    assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);

    // A copy not there yet: gated with its tag (there is no digest to pin).
    let mut missing = all(&review, &settings, Presence::Missing);
    missing.digests.insert(nginx.clone(), digest);
    let (_, pod) = run("create_containers_and_init", &settings, &missing);
    assert_eq!(image(&pod, "app"), nginx);
}
