//! The HTTP side of `serve`: warp routes, the body limit, reading bodies into
//! the review memory budget (`budget`) shared by every connection, deadlines,
//! the time budget around each decision, and one log line and metric per
//! admission. Reviews are read and written by `review`; decisions live in
//! `pods` and `secrets`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::metrics::{Outcome, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use super::review::{
    count_images, encode_review, parse_review, past_budget, Refusal, Route, Served, Summary, Unread,
};
use super::State;

mod budget;

use budget::mib;
pub use budget::{Reservation, ReviewBudget};

/// The largest AdmissionReview accepted (the apiserver's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

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

async fn admit<S, B>(state: &State, route: Route, headers: &HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    match route.served {
        Served::Pods => {
            review::<Pod, _, _, _, _>(state, route, headers, body, |request| {
                (count_images(&request), state.pods.admit(request))
            })
            .await
        }
        Served::Secrets => {
            review::<Secret, _, _, _, _>(state, route, headers, body, |request| {
                (0, state.secrets.admit(request))
            })
            .await
        }
    }
}

/// Reads, parses and answers one review of `K`; `handle` returns the number
/// of images it is about (counted when the time budget runs out) and the
/// answer to come. The review's memory stays reserved until it is answered.
async fn review<K, S, B, H, F>(
    state: &State,
    route: Route,
    headers: &HeaderMap,
    body: S,
    handle: H,
) -> Response
where
    K: Resource + DeserializeOwned,
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
    H: FnOnce(AdmissionRequest<K>) -> (usize, F),
    F: Future<Output = AdmissionResponse>,
{
    let started = Instant::now();
    let refused = |refusal: Refusal, reason: Option<&str>| {
        state
            .metrics
            .admission(route.path, Outcome::Invalid, started.elapsed());
        if let Some(reason) = reason {
            state.metrics.review_refused(route.path, reason);
        }
        warn!(path = route.path, status = refusal.status.as_u16(), error = %refusal.message, "admission request refused");
        text(refusal.status, refusal.message)
    };
    let (body, mut reservation) =
        match read_body(headers, body, state.body_read_timeout, &state.review_budget).await {
            Ok(read) => read,
            Err((refusal, reason)) => return refused(refusal, reason),
        };
    let body_bytes = body.capacity();
    let parsed = parse_review::<K>(&body, route, |more| reservation.grow(more));
    // The typed request owns copies of everything it needs.
    drop(body);
    reservation.release(body_bytes);
    let (request, charged) = match parsed {
        Ok(parsed) => parsed,
        Err(Unread::Invalid(refusal)) => return refused(refusal, None),
        Err(Unread::OutOfBudget(charged)) => {
            let needed = body_bytes + charged.bytes;
            let budget = &state.review_budget;
            return if needed > budget.limit() {
                let refusal = Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the review of {} would take more than the whole review memory budget of {} once read",
                        mib(body_bytes),
                        mib(budget.limit())
                    ),
                );
                refused(refusal, Some("over-budget"))
            } else {
                refused(budget.busy(), Some("budget"))
            };
        }
    };
    debug!(
        path = route.path,
        body_bytes,
        parsed_bytes = charged.bytes,
        "review read"
    );
    let summary = Summary::of(&request);
    let fallback = AdmissionResponse::from(&request);
    let (images, work) = handle(request);
    let (response, timed_out) = decide(state, route, fallback, images, work).await;
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
        images = response.audit_annotations.get(super::pods::IMAGES_AUDIT_KEY).map(String::as_str).unwrap_or_default(),
        latency_ms = elapsed.as_millis() as u64,
        "admission"
    );
    let answer = match encode_review(response) {
        Ok(body) => {
            let mut response = Response::new(body.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
    };
    drop(reservation);
    answer
}

/// Runs the path's handler within the admission budget. Past it, a pod is
/// allowed unchanged with a warning (its webhook fails open) and a Secret is
/// denied (its webhook fails closed). Returns whether the budget ran out.
async fn decide(
    state: &State,
    route: Route,
    fallback: AdmissionResponse,
    images: usize,
    work: impl Future<Output = AdmissionResponse>,
) -> (AdmissionResponse, bool) {
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

/// Reads the body into a buffer charged to the review memory budget: sized
/// from Content-Length up front when there is one, else grown (and charged)
/// as chunks arrive. Refused with 413 as soon as it is known to be over
/// 3 MiB, with 429 as soon as the budget cannot hold it, and with 408 when it
/// does not arrive in time. The error carries the refusal metric's reason.
async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    deadline: Duration,
    budget: &Arc<ReviewBudget>,
) -> Result<(Vec<u8>, Reservation), (Refusal, Option<&'static str>)>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = |size: String| {
        let refusal = Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {size} is over the limit of {MAX_BODY_BYTES} bytes (3 MiB)"),
        );
        (refusal, Some("too-large"))
    };
    let busy = || (budget.busy(), Some("budget"));
    let mut length = 0;
    if let Some(value) = headers.get(header::CONTENT_LENGTH) {
        let announced: u64 = value
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                let refusal =
                    Refusal::new(StatusCode::BAD_REQUEST, "invalid Content-Length header");
                (refusal, None)
            })?;
        if announced > MAX_BODY_BYTES as u64 {
            return Err(too_large(format!("{announced} bytes")));
        }
        length = announced as usize;
    }
    let mut reservation = budget.reserve(length).ok_or_else(busy)?;
    let read = async {
        futures_util::pin_mut!(body);
        let mut buffer = Vec::with_capacity(length);
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|err| {
                let refusal = Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {err}"),
                );
                (refusal, None)
            })?;
            let needed = buffer.len() + chunk.remaining();
            if needed > MAX_BODY_BYTES {
                return Err(too_large("more bytes".to_string()));
            }
            if needed > buffer.capacity() {
                // No Content-Length: grow by doubling. The old buffer and the new
                // one both exist while the bytes move, so both are charged then.
                let (old, capacity) = (buffer.capacity(), needed.max(2 * buffer.capacity()));
                let capacity = capacity.min(MAX_BODY_BYTES);
                if !reservation.grow(capacity) {
                    return Err(busy());
                }
                buffer.reserve_exact(capacity - buffer.len());
                reservation.release(old);
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                buffer.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(buffer)
    };
    let buffer: Vec<u8> = tokio::time::timeout(deadline, read).await.map_err(|_| {
        let refusal = Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(deadline)
            ),
        );
        (refusal, None)
    })??;
    Ok((buffer, reservation))
}
