//! The HTTP side of `serve`: warp routes, the body limit and deadlines, and
//! AdmissionReview in and out (v1 and v1beta1, answered in the version asked,
//! the patch as base64). Decisions live in `pods` and `secrets`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use tracing::{info, warn};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::metrics::{Outcome, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use super::State;

/// The largest AdmissionReview accepted (the apiserver's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// What an admission path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Pods,
    Secrets,
}

impl Served {
    fn kind(self) -> &'static str {
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

/// Routes of the HTTPS port: the admission paths and `/healthz`.
pub fn admission_routes(state: Arc<State>) -> BoxedFilter<(Response,)> {
    let route = |path: &'static str, served| move || Route { path, served };
    let pods = warp::path!("mutate" / "pods").map(route("/mutate/pods", Served::Pods));
    let seed = warp::path!("api" / "v1" / "mutate").map(route("/api/v1/mutate", Served::Pods));
    let secrets = warp::path!("mutate" / "secrets").map(route("/mutate/secrets", Served::Secrets));
    // Path before method, so an unknown path is 404 and a GET of a known one 405.
    let admit = pods
        .or(seed)
        .unify()
        .or(secrets)
        .unify()
        .and(warp::post())
        .and(with_state(state))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            |route: Route, state: Arc<State>, headers: HeaderMap, body| async move {
                admit(&state, route, &headers, body).await
            },
        );
    healthz()
        .or(admit)
        .unify()
        .recover(rejection)
        .unify()
        .boxed()
}

/// Routes of the plain-HTTP port: `/healthz`, `/readyz`, `/metrics`.
pub fn probe_routes(state: Arc<State>) -> BoxedFilter<(Response,)> {
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: Arc<State>| match state.readiness.problems() {
            problems if problems.is_empty() => text(StatusCode::OK, "ok".into()),
            problems => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}", problems.join("; ")),
            ),
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<State>| match state.metrics.encode() {
            Ok(body) => {
                let mut response = Response::new(body.into());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                response
            }
            Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
        });
    healthz()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(rejection)
        .unify()
        .boxed()
}

fn healthz() -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| text(StatusCode::OK, "ok".into()))
        .boxed()
}

fn with_state(
    state: Arc<State>,
) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

async fn rejection(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let status = if rejection.is_not_found() {
        StatusCode::NOT_FOUND
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::BAD_REQUEST
    };
    let message = match status {
        StatusCode::NOT_FOUND => {
            "not found: admission reviews go to POST /mutate/pods or POST /mutate/secrets"
                .to_string()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed: admission reviews are POSTed; probes are GET".to_string()
        }
        _ => format!("bad request: {rejection:?}"),
    };
    Ok(text(status, message))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(format!("{body}\n").into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why a request got no review back: an HTTP status and a one-line reason.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

async fn admit<S, B>(state: &State, route: Route, headers: &HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let started = Instant::now();
    let request = match read_body(headers, body, state.body_read_timeout).await {
        Ok(bytes) => parse_review(&bytes, route),
        Err(refusal) => Err(refusal),
    };
    let request = match request {
        Ok(request) => request,
        Err(refusal) => {
            state
                .metrics
                .admission(route.path, Outcome::Invalid, started.elapsed());
            warn!(path = route.path, status = refusal.status.as_u16(), error = %refusal.message, "admission request refused");
            return text(refusal.status, refusal.message);
        }
    };
    let summary = Summary::of(&request);
    let (response, timed_out) = decide(state, route, request).await;
    let outcome = if timed_out {
        Outcome::Error
    } else if !response.allowed {
        Outcome::Denied
    } else if response.patch.is_some() {
        Outcome::Patched
    } else {
        Outcome::Allowed
    };
    let elapsed = started.elapsed();
    state.metrics.admission(route.path, outcome, elapsed);
    info!(
        uid = %summary.uid,
        namespace = %summary.namespace,
        name = %summary.name,
        kind = %summary.kind,
        operation = %summary.operation,
        path = route.path,
        decision = outcome.as_str(),
        latency_ms = elapsed.as_millis() as u64,
        "admission"
    );
    match encode_review(response) {
        Ok(body) => {
            let mut response = Response::new(body.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
    }
}

/// Runs the path's handler within the admission budget. Past it, a pod is
/// allowed unchanged with a warning (its webhook fails open) and a Secret is
/// denied (its webhook fails closed). Returns whether the budget ran out.
async fn decide(
    state: &State,
    route: Route,
    request: AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, bool) {
    let fallback = AdmissionResponse::from(&request);
    let images = match route.served {
        Served::Pods => count_images(&request),
        Served::Secrets => 0,
    };
    let work = async {
        match route.served {
            Served::Pods => state.pods.admit(request).await,
            Served::Secrets => state.secrets.admit(request).await,
        }
    };
    match tokio::time::timeout(state.admission_budget, work).await {
        Ok(mut response) => {
            // The answer must match the question whatever the handler built.
            response.types = fallback.types.clone();
            response.uid = fallback.uid.clone();
            (response, false)
        }
        Err(_) => {
            if route.served == Served::Pods {
                for _ in 0..images {
                    state.metrics.image_allowed_unchanged("budget");
                }
            }
            (
                past_budget(route.served, fallback, state.admission_budget),
                true,
            )
        }
    }
}

/// The answer when the budget ran out: a pod is allowed unchanged with a
/// warning (its webhook fails open), a Secret is denied (it fails closed).
fn past_budget(
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

fn count_images(request: &AdmissionRequest<DynamicObject>) -> usize {
    let Some(spec) = request.object.as_ref().map(|o| &o.data["spec"]) else {
        return 0;
    };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec[field].as_array())
        .map(Vec::len)
        .sum()
}

/// Reads the body: refused with 413 as soon as it is known to be too large
/// (from Content-Length, before reading any of it, or while streaming), and
/// with 408 when it does not arrive in time.
async fn read_body<S, B>(headers: &HeaderMap, body: S, deadline: Duration) -> Result<Bytes, Refusal>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = |size: String| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {size} is over the limit of {MAX_BODY_BYTES} bytes (3 MiB)"),
        )
    };
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                Refusal::new(StatusCode::BAD_REQUEST, "invalid Content-Length header")
            })?;
        if length > MAX_BODY_BYTES as u64 {
            return Err(too_large(format!("{length} bytes")));
        }
    }
    let read = async {
        futures_util::pin_mut!(body);
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|err| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {err}"),
                )
            })?;
            if buffer.len() + chunk.remaining() > MAX_BODY_BYTES {
                return Err(too_large("more bytes".to_string()));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                buffer.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(deadline)
            ),
        )
    })?
}

/// Parses an AdmissionReview and checks that it asks what `route` answers.
fn parse_review(body: &[u8], route: Route) -> Result<AdmissionRequest<DynamicObject>, Refusal> {
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
struct Summary {
    uid: String,
    namespace: String,
    name: String,
    kind: String,
    operation: String,
}

impl Summary {
    fn of(request: &AdmissionRequest<DynamicObject>) -> Self {
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
