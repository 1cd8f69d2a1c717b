//! The transport guard: the plain-HTTP rule enforced on oci-client's own
//! HTTP client. Every plain-HTTP request it makes (a redirect, an upload
//! location, a token realm) goes through this in-process proxy on 127.0.0.1,
//! which relays it only when its host is in `--plain-http` and refuses it
//! otherwise; with an HTTPS proxy in the environment, it also carries the
//! HTTPS tunnels, so `NO_PROXY` cannot open a way around the rule.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::plain_http::PlainHttp;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The proxy user oci-client gives the guard.
const GUARD_USER: &str = "privatize";

/// The guard of one registry client: a proxy on 127.0.0.1 that stops with it.
pub struct Guard {
    addr: SocketAddr,
    /// Opens every answer the guard writes itself, so they are told apart
    /// from a remote body that imitates one.
    marker: String,
    /// The proxy password oci-client sends with each tunnel: other processes
    /// on the host (a hostNetwork copy Job's node) cannot tunnel through the
    /// guard to the environment's proxy.
    secret: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct State {
    rule: PlainHttp,
    marker: String,
    /// The `Proxy-Authorization` every request must carry.
    authorization: String,
    /// Relays allowed plain-HTTP requests: no redirects (the client behind
    /// the guard follows them, through the guard), the environment's
    /// `HTTP_PROXY`/`NO_PROXY` honoured.
    upstream: reqwest::Client,
    /// The environment's proxies, for HTTPS tunnels.
    proxies: Matcher,
    connect_timeout: Duration,
}

/// Whether the environment names a proxy for HTTPS (then the guard carries
/// HTTPS tunnels too, applying `NO_PROXY` to them only).
pub fn environment_has_https_proxy() -> bool {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

impl Guard {
    /// Starts the guard on 127.0.0.1 (an ephemeral port); needs a tokio runtime.
    pub fn start(
        rule: PlainHttp,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self> {
        tokio::runtime::Handle::try_current()
            .context("starting the transport guard: no async runtime")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("starting the transport guard on 127.0.0.1")?;
        listener
            .set_nonblocking(true)
            .context("starting the transport guard on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("starting the transport guard on 127.0.0.1")?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("starting the transport guard on 127.0.0.1")?;
        let upstream = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .build()
            .context("starting the transport guard")?;
        let marker = format!("privatize-guard-{}: ", random_hex()?);
        let secret = random_hex()?;
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{GUARD_USER}:{secret}"))
        );
        let state = Arc::new(State {
            rule,
            marker: marker.clone(),
            authorization,
            upstream,
            proxies: Matcher::from_env(),
            connect_timeout,
        });
        let accept = tokio::spawn(accept_loop(listener, state));
        Ok(Self {
            addr,
            marker,
            secret,
            accept,
        })
    }

    /// The proxy URL to give oci-client, password included.
    pub fn url(&self) -> String {
        format!("http://{GUARD_USER}:{}@{}", self.secret, self.addr)
    }

    pub fn marker(&self) -> &str {
        &self.marker
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    // Dropping the set when the guard stops ends every connection with it.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "transport guard: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "transport guard: connection ended");
            }
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        // Only tunnels need the password: a plain-HTTP request gets nothing a
        // process on this host could not get itself (and reqwest drops the
        // proxy password on a redirect to another host).
        let given = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !same(given, state.authorization.as_bytes()) {
            let mut refused = own(
                &state,
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "not privatize's own client",
            );
            refused.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="privatize""#),
            );
            return Ok(refused);
        }
        return Ok(tunnel(state, req).await);
    }
    let url = match Url::parse(&req.uri().to_string()) {
        Ok(url) if req.uri().scheme().is_some() => url,
        _ => return Ok(own(&state, StatusCode::BAD_REQUEST, "not a proxy request")),
    };
    if !state.rule.allows(&url) {
        // The error the request ends in says it; a log line would say it twice.
        tracing::debug!(url = %url, "plain-HTTP request refused: the host is not in --plain-http");
        return Ok(own(&state, StatusCode::FORBIDDEN, url.as_str()));
    }
    Ok(relay(&state, req, url).await)
}

/// Forwards an allowed plain-HTTP request and streams the answer back as it is.
async fn relay(state: &State, req: Request<Incoming>, url: Url) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let sent = state
        .upstream
        .request(parts.method, url.clone())
        .headers(headers)
        .body(reqwest::Body::wrap(body))
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut answer: Response<reqwest::Body> = answer.into();
            strip_hop_by_hop(answer.headers_mut());
            answer.map(|b| b.map_err(Into::into).boxed())
        }
        Err(err) => {
            let err = anyhow::Error::new(err).context(format!("relaying {url}"));
            own(state, StatusCode::BAD_GATEWAY, &format!("{err:#}"))
        }
    }
}

/// An HTTPS tunnel: straight to the host, or through the environment's proxy
/// unless `NO_PROXY` names the host.
async fn tunnel(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return own(&state, StatusCode::BAD_REQUEST, "CONNECT without a host");
    };
    let upstream = match connect(&state, &authority).await {
        Ok(stream) => stream,
        Err(err) => {
            let err = err.context(format!("connecting to {authority}"));
            return own(&state, StatusCode::BAD_GATEWAY, &format!("{err:#}"));
        }
    };
    tokio::spawn(async move {
        let mut upstream = upstream;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(err) => tracing::debug!(error = %err, "transport guard: tunnel not upgraded"),
        }
    });
    Response::new(empty())
}

async fn connect(state: &State, authority: &hyper::http::uri::Authority) -> Result<TcpStream> {
    let destination: Uri = format!("https://{authority}/")
        .parse()
        .context("reading the tunnel's host")?;
    let port = authority.port_u16().unwrap_or(443);
    let Some(proxy) = state.proxies.intercept(&destination) else {
        return within(state, TcpStream::connect((bare(authority.host()), port))).await;
    };
    let proxy_uri = proxy.uri();
    if proxy_uri.scheme_str() != Some("http") {
        anyhow::bail!("the proxy {proxy_uri} is not an http:// proxy, the only kind privatize tunnels through");
    }
    let proxy_host = proxy_uri.host().context("the proxy URL names no host")?;
    let proxy_port = proxy_uri.port_u16().unwrap_or(80);
    let mut stream = within(state, TcpStream::connect((bare(proxy_host), proxy_port)))
        .await
        .with_context(|| format!("through the proxy {proxy_host}:{proxy_port}"))?;
    let mut ask = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = proxy.basic_auth().and_then(|v| v.to_str().ok()) {
        ask.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    ask.push_str("\r\n");
    stream
        .write_all(ask.as_bytes())
        .await
        .with_context(|| format!("through the proxy {proxy_host}:{proxy_port}"))?;
    // The proxy's answer head, byte by byte so nothing of the tunnel is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            anyhow::bail!("the proxy {proxy_host}:{proxy_port} sent an answer head over 16 KiB");
        }
        let byte = stream.read_u8().await.with_context(|| {
            format!("reading the answer of the proxy {proxy_host}:{proxy_port}")
        })?;
        head.push(byte);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("the proxy {proxy_host}:{proxy_port} answered {status_line:?}");
    }
    Ok(stream)
}

async fn within(
    state: &State,
    connecting: impl std::future::Future<Output = std::io::Result<TcpStream>>,
) -> Result<TcpStream> {
    tokio::time::timeout(state.connect_timeout, connecting)
        .await
        .context("connect timed out")?
        .context("connecting")
}

/// Equal, in a time that does not tell how much of `given` was right.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// 128 random bits from the crypto provider, as hex.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("starting the transport guard: no random bytes"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A URI's host as a socket address wants it: IPv6 without brackets.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An answer the guard writes itself: the marker, then the text.
fn own(state: &State, status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{}{text}", state.marker)))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-answer HTTP server on 127.0.0.1: every request gets `ok`.
    async fn origin() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_guard_relays_listed_hosts_refuses_others_and_tunnels_only_for_its_client() {
        let listed = origin().await;
        let unlisted = origin().await;
        let guard = Guard::start(
            PlainHttp::new(&[listed.to_string()]),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .unwrap();
        let through = |proxy: &str| {
            reqwest::Client::builder()
                .proxy(reqwest::Proxy::http(proxy).unwrap())
                .build()
                .unwrap()
        };
        let client = through(&guard.url());
        let answer = client
            .get(format!("http://{listed}/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "ok");

        let answer = client
            .get(format!("http://{unlisted}/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
        assert_eq!(
            answer.text().await.unwrap(),
            format!("{}http://{unlisted}/v2/", guard.marker())
        );

        let mut stranger = tokio::net::TcpStream::connect(guard.addr).await.unwrap();
        stranger
            .write_all(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        stranger.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            &answer, b"HTTP/1.1 407",
            "a tunnel without the password is turned away"
        );
    }
}
