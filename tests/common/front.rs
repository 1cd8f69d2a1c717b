//! A programmable HTTP front for the plain source registry: it logs every
//! request, and a rule decides for each one whether to forward it or to
//! answer itself (after an optional delay): rate limits, blobs that fail for
//! good, slow or flaky blobs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warp::http::header::{self, HeaderName};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

/// Docker Hub's answer when the pull rate limit is reached.
pub const DOCKER_HUB_429: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}"#;

/// What the front does with one request.
pub enum Action {
    Forward,
    /// Forward after a pause (a slow registry).
    ForwardAfter(Duration),
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
        delay: Duration,
    },
}

/// One request the front received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The status the front answered itself, or `None` when it forwarded.
    pub answered: Option<u16>,
}

pub struct Front {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
}

type Rule = dyn Fn(&Method, &str) -> Action + Send + Sync;

impl Front {
    /// Forwards to `upstream` (`HOST:PORT`, plain HTTP) what `rule` says to forward.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Method, &str) -> Action + Send + Sync + 'static,
    ) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let rule: Arc<Rule> = Arc::new(rule);
        let upstream = format!("http://{upstream}");
        let addr = super::serve_on_thread(move |listener| async move {
            let http = reqwest::Client::new();
            let route = warp::method()
                .and(warp::path::full())
                .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                .and(warp::header::headers_cloned())
                .and(warp::body::bytes())
                .and_then(
                    move |method: Method,
                          path: warp::path::FullPath,
                          query: String,
                          headers: HeaderMap,
                          body: Bytes| {
                        let (http, upstream, rule, seen) =
                            (http.clone(), upstream.clone(), rule.clone(), seen.clone());
                        async move {
                            let path = path.as_str().to_string();
                            let action = rule(&method, &path);
                            let answered = match &action {
                                Action::Forward | Action::ForwardAfter(_) => None,
                                Action::Answer { status, .. } => Some(*status),
                            };
                            seen.lock().unwrap().push(Seen {
                                at: Instant::now(),
                                method: method.to_string(),
                                path: path.clone(),
                                answered,
                            });
                            let response = match action {
                                Action::Forward => {
                                    relay(&http, &upstream, method, &path, &query, &headers, body)
                                        .await
                                }
                                Action::ForwardAfter(delay) => {
                                    tokio::time::sleep(delay).await;
                                    relay(&http, &upstream, method, &path, &query, &headers, body)
                                        .await
                                }
                                Action::Answer {
                                    status,
                                    headers,
                                    body,
                                    delay,
                                } => {
                                    tokio::time::sleep(delay).await;
                                    let mut response = Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json");
                                    for (name, value) in headers {
                                        response = response.header(name, value);
                                    }
                                    response.body(Bytes::from_static(body.as_bytes())).unwrap()
                                }
                            };
                            Ok::<_, warp::Rejection>(response)
                        }
                    },
                );
            warp::serve(route).incoming(listener).run().await;
        });
        Self { addr, log }
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

/// Forwards one request to `upstream` (`http://HOST:PORT`) and brings back
/// the answer with the headers a registry client needs.
pub async fn relay(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Bytes> {
    let url = if query.is_empty() {
        format!("{upstream}{path}")
    } else {
        format!("{upstream}{path}?{query}")
    };
    let mut request = http.request(method, url).body(body);
    for name in [header::ACCEPT, header::CONTENT_TYPE, header::RANGE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value.clone());
        }
    }
    let Ok(upstream_response) = request.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Bytes::new())
            .unwrap();
    };
    let mut response = Response::builder().status(upstream_response.status());
    for name in [
        header::CONTENT_TYPE,
        HeaderName::from_static("docker-content-digest"),
        header::LOCATION,
        header::CONTENT_RANGE,
    ] {
        if let Some(value) = upstream_response.headers().get(&name) {
            response = response.header(name, value.clone());
        }
    }
    response
        .body(upstream_response.bytes().await.unwrap_or_default())
        .unwrap()
}
