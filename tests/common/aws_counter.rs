//! A counting HTTP front for moto: forwards every AWS API call and counts them by
//! operation (`X-Amz-Target`) and region (the SigV4 credential scope). It can hold
//! GetAuthorizationToken calls a while, so concurrent callers overlap, and fail the
//! next few of a region with an AWS error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

pub const GET_AUTHORIZATION_TOKEN: &str = "GetAuthorizationToken";

#[derive(Default)]
struct Counts {
    calls: HashMap<(String, String), usize>,
    failures: HashMap<String, usize>,
}

pub struct AwsCounter {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl AwsCounter {
    /// Forwards to moto at `upstream` (`http://HOST:PORT`); GetAuthorizationToken
    /// answers are held for `hold`.
    pub fn start(upstream: &str, hold: Duration) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let seen = counts.clone();
        let upstream = upstream.to_string();
        let addr = super::serve_on_thread(move |listener| async move {
            let http = reqwest::Client::new();
            let route = warp::method()
                .and(warp::path::full())
                .and(warp::header::headers_cloned())
                .and(warp::body::bytes())
                .and_then(
                    move |method: Method,
                          path: warp::path::FullPath,
                          headers: HeaderMap,
                          body: Bytes| {
                        let (http, upstream, seen) = (http.clone(), upstream.clone(), seen.clone());
                        async move {
                            let operation = operation(&headers);
                            let region = region(&headers);
                            let fail = {
                                let mut counts = seen.lock().unwrap();
                                *counts
                                    .calls
                                    .entry((operation.clone(), region.clone()))
                                    .or_default() += 1;
                                let left = counts.failures.entry(region.clone()).or_default();
                                let fail = operation == GET_AUTHORIZATION_TOKEN && *left > 0;
                                if fail {
                                    *left -= 1;
                                }
                                fail
                            };
                            if operation == GET_AUTHORIZATION_TOKEN {
                                tokio::time::sleep(hold).await;
                            }
                            let reply = if fail {
                                Response::builder()
                                    .status(StatusCode::BAD_REQUEST)
                                    .header("content-type", "application/x-amz-json-1.1")
                                    .body(Bytes::from_static(
                                        br#"{"__type":"InvalidParameterException","message":"injected failure"}"#,
                                    ))
                                    .unwrap()
                            } else {
                                forward(&http, &upstream, method, path.as_str(), headers, body)
                                    .await
                            };
                            Ok::<_, warp::Rejection>(reply)
                        }
                    },
                );
            warp::serve(route).incoming(listener).run().await;
        });
        Self { addr, counts }
    }

    /// `http://ADDR`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls of `operation` (e.g. `GetAuthorizationToken`) signed for `region`.
    pub fn calls(&self, operation: &str, region: &str) -> usize {
        let counts = self.counts.lock().unwrap();
        counts
            .calls
            .get(&(operation.to_string(), region.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The next `count` GetAuthorizationToken calls for `region` fail.
    pub fn fail_next(&self, region: &str, count: usize) {
        self.counts
            .lock()
            .unwrap()
            .failures
            .insert(region.to_string(), count);
    }
}

/// `GetAuthorizationToken` from `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken`.
fn operation(headers: &HeaderMap) -> String {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    target.rsplit('.').next().unwrap_or(target).to_string()
}

/// The region of `Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, …`.
fn region(headers: &HeaderMap) -> String {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|scope| scope.split('/').nth(2))
        .unwrap_or("?")
        .to_string()
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Bytes> {
    let mut request = http.request(method, format!("{upstream}{path}")).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Bytes::from(e.to_string()))
                .unwrap()
        }
    };
    let mut reply = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            reply = reply.header(name, value);
        }
    }
    reply
        .body(answer.bytes().await.unwrap_or_default())
        .unwrap()
}
