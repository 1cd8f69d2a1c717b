//! Parts for the SSRF tests, all on 127.0.0.1: a `Recorder` that stands for
//! an internal host (it logs every request and answers what it is told), an
//! `EvilRegistry` in front of the source registry that points clients at
//! other hosts (a Bearer realm, redirects of blobs or manifests), an HTTPS
//! `Cdn` that serves blobs a redirect sends clients to, and a `ConnectProxy`
//! standing for a corporate HTTPS proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use super::front::relay;

/// One request a part received.
#[derive(Debug, Clone)]
pub struct Heard {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Authorization` header, when there was one.
    pub authorization: Option<String>,
}

type Log = Arc<Mutex<Vec<Heard>>>;

fn heard(log: &Log, method: &Method, target: String, headers: &HeaderMap) {
    log.lock().unwrap().push(Heard {
        method: method.to_string(),
        target,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
}

/// A plain-HTTP host that logs every request and answers each with one status and body.
pub struct Recorder {
    pub addr: SocketAddr,
    log: Log,
}

impl Recorder {
    pub fn start(status: u16, body: &str) -> Self {
        let log: Log = Arc::default();
        let seen = log.clone();
        let body = body.to_string();
        let addr = super::serve_on_thread(move |listener| async move {
            let route = warp::method()
                .and(warp::path::full())
                .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                .and(warp::header::headers_cloned())
                .map(
                    move |method: Method,
                          path: warp::path::FullPath,
                          query: String,
                          headers: HeaderMap| {
                        let target = match query.as_str() {
                            "" => path.as_str().to_string(),
                            q => format!("{}?{q}", path.as_str()),
                        };
                        heard(&seen, &method, target, &headers);
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Bytes::from(body.clone()))
                            .unwrap()
                    },
                );
            warp::serve(route).incoming(listener).run().await;
        });
        Self { addr, log }
    }

    /// Every request so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.log.lock().unwrap().clone()
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// How the evil registry treats clients.
#[derive(Clone, Default)]
pub struct Tricks {
    /// `WWW-Authenticate` of every `/v2/…` request without `Bearer <granted>`.
    pub challenge: Option<String>,
    /// The token a client must bring once challenged.
    pub granted: Option<String>,
    /// Basic credentials (`user:password`) a client must bring; a `Basic` challenge otherwise.
    pub basic: Option<String>,
    /// Blob GETs are sent here (`307`, the blob's path appended).
    pub blobs_to: Option<String>,
    /// Manifest GETs and HEADs are sent here (`307`, the manifest's path appended).
    pub manifests_to: Option<String>,
}

/// A registry front over the testbed's source registry, playing `Tricks`.
pub struct EvilRegistry {
    pub addr: SocketAddr,
    log: Log,
}

impl EvilRegistry {
    pub fn start(upstream: &str, tricks: Tricks) -> Self {
        let log: Log = Arc::default();
        let seen = log.clone();
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
                        let (http, upstream, tricks, seen) =
                            (http.clone(), upstream.clone(), tricks.clone(), seen.clone());
                        async move {
                            let path = path.as_str().to_string();
                            heard(&seen, &method, path.clone(), &headers);
                            Ok::<_, warp::Rejection>(
                                play(
                                    &tricks, &http, &upstream, method, &path, &query, &headers,
                                    body,
                                )
                                .await,
                            )
                        }
                    },
                );
            warp::serve(route).incoming(listener).run().await;
        });
        Self { addr, log }
    }

    /// Every request so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.log.lock().unwrap().clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn play(
    tricks: &Tricks,
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Bytes> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(challenge) = &tricks.challenge {
        let granted = tricks.granted.as_deref().map(|t| format!("Bearer {t}"));
        if granted.as_deref() != Some(given) {
            return answer(
                StatusCode::UNAUTHORIZED,
                Some(("www-authenticate", challenge.clone())),
            );
        }
    }
    if let Some(basic) = &tricks.basic {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(basic)
        );
        if given != expected {
            let challenge = r#"Basic realm="evil""#.to_string();
            return answer(
                StatusCode::UNAUTHORIZED,
                Some(("www-authenticate", challenge)),
            );
        }
    }
    let to = if path.contains("/blobs/") && method == Method::GET {
        tricks.blobs_to.as_ref()
    } else if path.contains("/manifests/") && (method == Method::GET || method == Method::HEAD) {
        tricks.manifests_to.as_ref()
    } else {
        None
    };
    if let Some(to) = to {
        return answer(
            StatusCode::TEMPORARY_REDIRECT,
            Some(("location", format!("{to}{path}"))),
        );
    }
    relay(http, upstream, method, path, query, headers, body).await
}

fn answer(status: StatusCode, header: Option<(&'static str, String)>) -> Response<Bytes> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some((name, value)) = header {
        response = response.header(name, value);
    }
    response
        .body(Bytes::from_static(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ))
        .unwrap()
}

/// An HTTPS host (the testbed's server certificate, so `--ca-file` trusts it)
/// that serves GETs from the source registry, as a CDN serves blobs.
pub struct Cdn {
    pub addr: SocketAddr,
    log: Log,
}

impl Cdn {
    pub fn start(upstream: &str, cert_dir: &std::path::Path) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert_dir.join("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(cert_dir.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let log: Log = Arc::default();
        let seen = log.clone();
        let upstream = format!("http://{upstream}");
        let addr = super::serve_on_thread(move |listener| async move {
            let http = reqwest::Client::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, http, upstream, seen) = (
                    acceptor.clone(),
                    http.clone(),
                    upstream.clone(),
                    seen.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (http, upstream, seen) =
                                (http.clone(), upstream.clone(), seen.clone());
                            async move {
                                let target = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                heard(&seen, req.method(), target.clone(), req.headers());
                                let answer = http
                                    .get(format!("{upstream}{target}"))
                                    .send()
                                    .await
                                    .unwrap();
                                let status = answer.status();
                                let bytes = answer.bytes().await.unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, log }
    }

    pub fn heard(&self) -> Vec<Heard> {
        self.log.lock().unwrap().clone()
    }
}

/// An HTTP CONNECT proxy (what `HTTPS_PROXY` names): tunnels anywhere, logs each target.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        let addr = super::serve_on_thread(move |listener| async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let Ok(byte) = client.read_u8().await else {
                            return;
                        };
                        head.push(byte);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut words = head.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                        let _ = client
                            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                            .await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self { addr, targets }
    }

    /// The `HOST:PORT` of every tunnel asked for.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}
