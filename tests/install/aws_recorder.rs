//! A front for moto that records the operation of every AWS call on its way
//! (`X-Amz-Target`), as the IAM action it needs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::common::{self, testbed};

/// A front for moto that records the operation (`X-Amz-Target`) of every call.
pub struct AwsRecorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl AwsRecorder {
    pub fn start() -> Self {
        let upstream = testbed().env["MOTO_ENDPOINT"].clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = common::serve_on_thread(move |listener| async move {
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
                        let (http, upstream, log) = (http.clone(), upstream.clone(), log.clone());
                        async move {
                            let target = headers
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?");
                            let operation = target.rsplit('.').next().unwrap_or(target);
                            log.lock().unwrap().push(operation.to_string());
                            Ok::<_, warp::Rejection>(
                                forward(&http, &upstream, method, path.as_str(), headers, body)
                                    .await,
                            )
                        }
                    },
                );
            warp::serve(route).incoming(listener).run().await;
        });
        Self { addr, seen }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The operations called so far, as IAM actions (`ecr:CreateRepository`).
    pub fn actions(&self) -> BTreeSet<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|op| format!("ecr:{op}"))
            .collect()
    }
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
    let Ok(answer) = request.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Bytes::new())
            .unwrap();
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
