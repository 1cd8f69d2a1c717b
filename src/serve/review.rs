//! AdmissionReview in and out, without I/O: parse and check a review against
//! the path it came to, answer in the version asked with the patch as base64,
//! and the fallback answers when the time budget runs out.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use warp::http::StatusCode;

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

pub fn count_images(request: &AdmissionRequest<DynamicObject>) -> usize {
    let Some(spec) = request.object.as_ref().map(|o| &o.data["spec"]) else {
        return 0;
    };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec[field].as_array())
        .map(Vec::len)
        .sum()
}

/// Parses an AdmissionReview and checks that it asks what `route` answers.
pub fn parse_review(body: &[u8], route: Route) -> Result<AdmissionRequest<DynamicObject>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, message);
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|err| bad(format!("invalid AdmissionReview JSON: {err}")))?;
    if review.types.kind != "AdmissionReview" {
        return Err(bad(format!(
            "expected kind AdmissionReview, got {:?}",
            review.types.kind
        )));
    }
    let version = review.types.api_version.clone();
    if version != V1 && version != V1BETA1 {
        return Err(bad(format!(
            "unsupported AdmissionReview apiVersion {version:?}: expected {V1} or {V1BETA1}"
        )));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| bad("the AdmissionReview has no request".to_string()))?;
    let kind = &request.kind;
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
    Ok(request)
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
    pub fn of(request: &AdmissionRequest<DynamicObject>) -> Self {
        let metadata = request.object.as_ref().map(|o| &o.metadata);
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
/// Kubernetes wants base64 text, with `patchType: JSONPatch`.
pub fn encode_review(response: AdmissionResponse) -> Result<Vec<u8>> {
    let review = response.into_review();
    let mut value = serde_json::to_value(&review).context("serialising the AdmissionReview")?;
    if let Some(answer) = value.get_mut("response").and_then(|r| r.as_object_mut()) {
        if let Some(patch) = answer.get("patch").and_then(|p| p.as_array()) {
            let bytes = patch
                .iter()
                .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect::<Option<Vec<u8>>>()
                .context("serialising the patch: not a byte array")?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            answer.insert("patch".into(), encoded.into());
            answer.insert("patchType".into(), "JSONPatch".into());
        }
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

    #[test]
    fn patch_is_sent_as_base64_json_patch() {
        let request = parse_review(review(V1BETA1, "Pod").as_bytes(), PODS).unwrap();
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
        let err = parse_review(review(V1, "Secret").as_bytes(), PODS).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "/mutate/pods serves Pods, not v1/Secret");
    }

    #[test]
    fn an_unknown_review_version_is_refused() {
        let err = parse_review(review("admission.k8s.io/v2", "Pod").as_bytes(), PODS).unwrap_err();
        assert!(
            err.message
                .contains("unsupported AdmissionReview apiVersion"),
            "{}",
            err.message
        );
    }

    #[test]
    fn past_the_budget_a_pod_is_allowed_unchanged_and_a_secret_denied() {
        let request = parse_review(review(V1, "Pod").as_bytes(), PODS).unwrap();
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
