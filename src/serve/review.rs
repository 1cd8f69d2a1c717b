//! AdmissionReview in and out, without I/O: parse a review straight into its
//! typed object (metered, see `meter`) and check it against the path it came
//! to, answer in the version asked with the patch as base64, and the fallback
//! answers when the time budget runs out.

mod meter;

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{GroupVersionKind, Resource, TypeMeta};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use warp::http::StatusCode;

pub use meter::Charged;

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// What an admission path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Pods,
    Secrets,
}

impl Served {
    pub fn kind(self) -> &'static str {
        match self {
            Served::Pods => "Pod",
            Served::Secrets => "Secret",
        }
    }
}

/// One admission route: its path (the metric label) and what it serves.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub served: Served,
}

/// Why a request got no review back: an HTTP status and a one-line reason.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// The answer when the budget ran out: a pod is allowed unchanged with a
/// warning (its webhook fails open), a Secret is denied (it fails closed).
pub fn past_budget(
    served: Served,
    unchanged: AdmissionResponse,
    budget: Duration,
) -> AdmissionResponse {
    let budget = humantime::format_duration(budget);
    match served {
        Served::Pods => {
            let mut response = unchanged;
            response.warnings = Some(vec![format!(
                "privatize: no decision within {budget}; the pod is admitted with its images unchanged"
            )]);
            response
        }
        Served::Secrets => unchanged.deny(format!(
            "privatize: ECR credential injection did not finish within {budget}; try again"
        )),
    }
}

/// Containers of every kind in the pod (each has an image).
pub fn count_images(request: &AdmissionRequest<Pod>) -> usize {
    let Some(spec) = request.object.as_ref().and_then(|pod| pod.spec.as_ref()) else {
        return 0;
    };
    spec.containers.len()
        + spec.init_containers.as_ref().map_or(0, Vec::len)
        + spec.ephemeral_containers.as_ref().map_or(0, Vec::len)
}

/// Why a review was not read.
#[derive(Debug)]
pub enum Unread {
    /// Not a review this path answers (400).
    Invalid(Refusal),
    /// The review memory budget refused more while the review was parsed.
    OutOfBudget(Charged),
}

/// The review's own fields. kube's `AdmissionReview` flattens its `TypeMeta`,
/// which makes serde buffer the whole request as an untyped tree first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "R: DeserializeOwned")]
struct Envelope<R> {
    api_version: String,
    kind: String,
    request: Option<R>,
}

/// Just what a review asks, read when its object does not parse as `K`:
/// the answer then names a review sent to the wrong path as such.
#[derive(Deserialize)]
struct Asked {
    kind: GroupVersionKind,
}

/// Parses an AdmissionReview straight into `K` (a Pod or a Secret) and checks
/// that it asks what `route` answers. The parse charges the heap it takes to
/// `grant` (see `meter::from_slice`) and stops when a grant is refused.
pub fn parse_review<K>(
    body: &[u8],
    route: Route,
    mut grant: impl FnMut(usize) -> bool,
) -> Result<(AdmissionRequest<K>, Charged), Unread>
where
    K: Resource + DeserializeOwned,
{
    let (parsed, charged) = meter::from_slice::<Envelope<AdmissionRequest<K>>, _>(body, &mut grant);
    if charged.refused {
        return Err(Unread::OutOfBudget(charged));
    }
    let envelope = match parsed {
        Ok(envelope) => envelope,
        Err(err) => {
            // Is it the object that is wrong, or the question?
            let (asked, more) = meter::from_slice::<Envelope<Asked>, _>(body, &mut grant);
            if more.refused {
                return Err(Unread::OutOfBudget(more));
            }
            if let Ok(asked) = asked {
                let kind = asked.request.as_ref().map(|r| &r.kind);
                check(&asked.api_version, &asked.kind, kind, route)?;
            }
            return Err(bad(format!("invalid AdmissionReview JSON: {err}")));
        }
    };
    let kind = envelope.request.as_ref().map(|r| &r.kind);
    check(&envelope.api_version, &envelope.kind, kind, route)?;
    let review = AdmissionReview {
        types: TypeMeta {
            api_version: envelope.api_version,
            kind: envelope.kind,
        },
        request: envelope.request,
        response: None,
    };
    let request = review
        .try_into()
        .map_err(|_| bad("the AdmissionReview has no request".to_string()))?;
    Ok((request, charged))
}

fn bad(message: String) -> Unread {
    Unread::Invalid(Refusal::new(StatusCode::BAD_REQUEST, message))
}

/// Checks that a review of this version asks what `route` answers.
fn check(
    api_version: &str,
    kind: &str,
    asked: Option<&GroupVersionKind>,
    route: Route,
) -> Result<(), Unread> {
    if kind != "AdmissionReview" {
        return Err(bad(format!("expected kind AdmissionReview, got {kind:?}")));
    }
    if api_version != V1 && api_version != V1BETA1 {
        return Err(bad(format!(
            "unsupported AdmissionReview apiVersion {api_version:?}: expected {V1} or {V1BETA1}"
        )));
    }
    let Some(kind) = asked else {
        return Err(bad("the AdmissionReview has no request".to_string()));
    };
    if !kind.group.is_empty() || kind.kind != route.served.kind() {
        let asked = if kind.group.is_empty() {
            format!("{}/{}", kind.version, kind.kind)
        } else {
            format!("{}/{}/{}", kind.group, kind.version, kind.kind)
        };
        return Err(bad(format!(
            "{} serves {}s, not {asked}",
            route.path,
            route.served.kind()
        )));
    }
    Ok(())
}

/// What the admission log line says about a request (never the object's content).
pub struct Summary {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub operation: String,
}

impl Summary {
    pub fn of<K: Resource>(request: &AdmissionRequest<K>) -> Self {
        let metadata = request.object.as_ref().map(|o| o.meta());
        // A pod created from a template has only a generateName at admission.
        let name = if !request.name.is_empty() {
            request.name.clone()
        } else if let Some(name) = metadata.and_then(|m| m.name.clone()) {
            name
        } else if let Some(prefix) = metadata.and_then(|m| m.generate_name.clone()) {
            format!("{prefix}*")
        } else {
            String::new()
        };
        Self {
            uid: request.uid.clone(),
            namespace: request.namespace.clone().unwrap_or_default(),
            name,
            kind: request.kind.kind.clone(),
            operation: format!("{:?}", request.operation).to_uppercase(),
        }
    }
}

/// The review to send back: kube serialises `patch` as an array of numbers;
/// Kubernetes wants base64 text, with `patchType: JSONPatch`. The patch is
/// taken out first, so it never becomes a tree of one number per byte.
pub fn encode_review(mut response: AdmissionResponse) -> Result<Vec<u8>> {
    let patch = response.patch.take();
    let review = response.into_review();
    let mut value = serde_json::to_value(&review).context("serialising the AdmissionReview")?;
    if let (Some(patch), Some(answer)) = (
        patch,
        value.get_mut("response").and_then(|r| r.as_object_mut()),
    ) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
        answer.insert("patch".into(), encoded.into());
        answer.insert("patchType".into(), "JSONPatch".into());
    }
    serde_json::to_vec(&value).context("serialising the AdmissionReview")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(api_version: &str, kind: &str) -> String {
        serde_json::json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p", "namespace": "ns", "operation": "CREATE",
                "userInfo": {}, "object": {"apiVersion": "v1", "kind": kind, "metadata": {"name": "p"}}
            }
        })
        .to_string()
    }

    const PODS: Route = Route {
        path: "/mutate/pods",
        served: Served::Pods,
    };

    fn pod(body: &str) -> AdmissionRequest<Pod> {
        parse_review::<Pod>(body.as_bytes(), PODS, |_| true)
            .unwrap()
            .0
    }

    fn refused(body: &str) -> Refusal {
        match parse_review::<Pod>(body.as_bytes(), PODS, |_| true) {
            Err(Unread::Invalid(refusal)) => refusal,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn patch_is_sent_as_base64_json_patch() {
        let request = pod(&review(V1BETA1, "Pod"));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
        ]))
        .unwrap();
        let response = AdmissionResponse::from(&request).with_patch(patch).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&encode_review(response).unwrap()).unwrap();
        assert_eq!(out["apiVersion"], V1BETA1);
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let decoded: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(decoded[0]["path"], "/metadata/labels");
    }

    #[test]
    fn a_secret_sent_to_the_pod_path_is_named() {
        let err = refused(&review(V1, "Secret"));
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "/mutate/pods serves Pods, not v1/Secret");
    }

    #[test]
    fn an_unknown_review_version_is_refused() {
        let err = refused(&review("admission.k8s.io/v2", "Pod"));
        assert!(
            err.message
                .contains("unsupported AdmissionReview apiVersion"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_review_is_read_straight_into_a_typed_pod() {
        let request = pod(&review(V1, "Pod"));
        assert_eq!(request.types.api_version, V1);
        assert_eq!(request.object.unwrap().metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn a_review_the_grant_refuses_is_out_of_budget_not_invalid() {
        let containers = vec![serde_json::json!({}); 1000];
        let mut body: serde_json::Value = serde_json::from_str(&review(V1, "Pod")).unwrap();
        body["request"]["object"]["spec"] = serde_json::json!({ "containers": containers });
        let body = body.to_string();
        let mut granted = 0;
        match parse_review::<Pod>(body.as_bytes(), PODS, |n| {
            granted += n;
            granted <= 1024 * 1024
        }) {
            Err(Unread::OutOfBudget(charged)) => assert!(charged.refused),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn past_the_budget_a_pod_is_allowed_unchanged_and_a_secret_denied() {
        let request = pod(&review(V1, "Pod"));
        let unchanged = AdmissionResponse::from(&request);
        let budget = Duration::from_secs(5);
        let pod = past_budget(Served::Pods, unchanged.clone(), budget);
        assert!(pod.allowed && pod.patch.is_none());
        assert_eq!(
            pod.warnings.unwrap(),
            ["privatize: no decision within 5s; the pod is admitted with its images unchanged"]
        );
        let secret = past_budget(Served::Secrets, unchanged, budget);
        assert!(!secret.allowed);
        assert_eq!(
            secret.result.message,
            "privatize: ECR credential injection did not finish within 5s; try again"
        );
    }
}
