//! A token-auth front for the plain source registry, the way Docker Hub,
//! ghcr.io or quay.io speak to anonymous clients: `/v2/` answers 401 with a
//! `Bearer realm=…` challenge, `/token` hands out an anonymous token for the
//! asked scope, and requests with that token are forwarded to the registry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::http::header::{self, HeaderName};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

const TOKEN: &str = "anonymous-test-token";

pub struct TokenGateway {
    pub addr: SocketAddr,
    /// Scopes clients asked tokens for.
    pub scopes: Arc<Mutex<Vec<String>>>,
}

impl TokenGateway {
    pub fn start(upstream: &str) -> Self {
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let upstream = format!("http://{upstream}");
        let addr = super::serve_on_thread(move |listener| async move {
            let addr = listener.local_addr().unwrap();
            let token = warp::path("token")
                .and(warp::query::<std::collections::HashMap<String, String>>())
                .map(move |q: std::collections::HashMap<String, String>| {
                    seen.lock()
                        .unwrap()
                        .push(q.get("scope").cloned().unwrap_or_default());
                    warp::reply::json(&serde_json::json!({"token": TOKEN, "expires_in": 300}))
                });
            let http = reqwest::Client::new();
            let forward = warp::path("v2")
                .and(warp::method())
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
                        let (http, upstream) = (http.clone(), upstream.clone());
                        async move {
                            Ok::<_, warp::Rejection>(
                                forward(
                                    http,
                                    upstream,
                                    method,
                                    path.as_str().to_string(),
                                    query,
                                    headers,
                                    body,
                                    addr,
                                )
                                .await,
                            )
                        }
                    },
                );
            warp::serve(token.or(forward))
                .incoming(listener)
                .run()
                .await;
        });
        Self { addr, scopes }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    http: reqwest::Client,
    upstream: String,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    me: SocketAddr,
) -> Response<Bytes> {
    let expected = format!("Bearer {TOKEN}");
    let authorised =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if !authorised {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                format!(r#"Bearer realm="http://{me}/token",service="test-gateway""#),
            )
            .body(Bytes::from_static(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ))
            .unwrap();
    }
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
    let upstream_response = request.send().await.unwrap();
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
        .body(upstream_response.bytes().await.unwrap())
        .unwrap()
}
