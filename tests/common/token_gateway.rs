//! A token-auth front for the plain source registry, the way Docker Hub,
//! ghcr.io or quay.io speak to clients: `/v2/` answers 401 with a
//! `Bearer realm=…` challenge, `/token` hands out a token for the asked
//! scope, and requests with that token are forwarded to the registry.
//! Anonymous mode answers `GET /token`; identity-token mode answers only the
//! OAuth2 refresh-token exchange (`POST /token`), as registries do for
//! docker's `identitytoken`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use super::front::relay;

const TOKEN: &str = "anonymous-test-token";
const ACCESS_TOKEN: &str = "exchanged-access-token";
const SERVICE: &str = "test-gateway";

pub struct TokenGateway {
    pub addr: SocketAddr,
    /// Scopes clients asked tokens for.
    pub scopes: Arc<Mutex<Vec<String>>>,
    /// The form fields of every refresh-token exchange, the refresh token left out.
    pub exchanges: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Every `Authorization` header sent to `/v2/…`.
    pub authorizations: Arc<Mutex<Vec<String>>>,
}

impl TokenGateway {
    /// Hands anonymous tokens to anyone (`GET /token`).
    pub fn start(upstream: &str) -> Self {
        Self::serve(upstream, None)
    }

    /// Accepts only the refresh-token exchange of `refresh_token` (`POST /token`).
    pub fn with_identity_token(upstream: &str, refresh_token: &str) -> Self {
        Self::serve(upstream, Some(refresh_token.to_string()))
    }

    fn serve(upstream: &str, refresh_token: Option<String>) -> Self {
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let (seen, exchanged, authorized) =
            (scopes.clone(), exchanges.clone(), authorizations.clone());
        let upstream = format!("http://{upstream}");
        let access = if refresh_token.is_some() {
            ACCESS_TOKEN
        } else {
            TOKEN
        };
        let addr = super::serve_on_thread(move |listener| async move {
            let addr = listener.local_addr().unwrap();
            let anonymous = refresh_token.is_none();
            let get_token = warp::get()
                .and(warp::path("token"))
                .and(warp::query::<HashMap<String, String>>())
                .map(move |q: HashMap<String, String>| {
                    if !anonymous {
                        return reply(
                            StatusCode::UNAUTHORIZED,
                            r#"{"error":"unauthorized_client"}"#,
                        );
                    }
                    seen.lock()
                        .unwrap()
                        .push(q.get("scope").cloned().unwrap_or_default());
                    reply(
                        StatusCode::OK,
                        &serde_json::json!({"token": TOKEN, "expires_in": 300}).to_string(),
                    )
                });
            let post_token = warp::post()
                .and(warp::path("token"))
                .and(warp::body::form::<HashMap<String, String>>())
                .map(move |mut form: HashMap<String, String>| {
                    let given = form.remove("refresh_token");
                    exchanged.lock().unwrap().push(form.clone());
                    let valid = refresh_token.is_some()
                        && given == refresh_token
                        && form.get("grant_type").map(String::as_str) == Some("refresh_token")
                        && form.get("service").map(String::as_str) == Some(SERVICE)
                        && form.get("client_id").is_some_and(|c| !c.is_empty())
                        && form.get("scope").is_some_and(|s| s.starts_with("repository:"));
                    if !valid {
                        return reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#);
                    }
                    reply(
                        StatusCode::OK,
                        &serde_json::json!({"access_token": ACCESS_TOKEN, "expires_in": 300, "scope": form["scope"]}).to_string(),
                    )
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
                        let (http, upstream, authorized) =
                            (http.clone(), upstream.clone(), authorized.clone());
                        async move {
                            let given = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            authorized.lock().unwrap().push(given.clone());
                            if given != format!("Bearer {access}") {
                                return Ok::<_, warp::Rejection>(challenge(addr));
                            }
                            Ok(relay(
                                &http,
                                &upstream,
                                method,
                                path.as_str(),
                                &query,
                                &headers,
                                body,
                            )
                            .await)
                        }
                    },
                );
            warp::serve(get_token.or(post_token).unify().or(forward).unify())
                .incoming(listener)
                .run()
                .await;
        });
        Self {
            addr,
            scopes,
            exchanges,
            authorizations,
        }
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

fn challenge(me: SocketAddr) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            "www-authenticate",
            format!(r#"Bearer realm="http://{me}/token",service="{SERVICE}""#),
        )
        .body(Bytes::from_static(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ))
        .unwrap()
}
