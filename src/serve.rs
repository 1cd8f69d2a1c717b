//! Room: `privatize serve`. Loads the certificate, connects to Kubernetes,
//! serves admissions on HTTPS and probes/metrics on plain HTTP, runs the gate
//! controller, and on SIGTERM fails /readyz, waits, then drains and exits 0.

pub mod copy_ca;
pub mod credentials;
pub mod drift;
pub mod flights;
pub mod gate;
pub mod http;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod passon;
pub mod platforms;
pub mod pods;
pub mod presence;
pub mod release;
pub mod renew;
pub mod review;
pub mod secrets;
pub mod setup;
pub mod sources;
pub mod sweep;
pub mod tls;
pub mod trust;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::ecr::tokens::TokenCache;
use credentials::Credentials;
use listener::Timeouts;
use metrics::Metrics;
use pods::Pods;
use secrets::Secrets;
use tls::{CertSource, CertWatcher, ReloadingResolver};

/// What every request handler shares.
pub struct State {
    pub pods: Arc<Pods>,
    pub secrets: Arc<Secrets>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Time one admission may take before the path's fallback answer.
    pub admission_budget: Duration,
    /// Time a client has to send a request body.
    pub body_read_timeout: Duration,
    /// Memory all reviews in flight may hold together.
    pub review_budget: Arc<http::ReviewBudget>,
}

/// Whether `/readyz` passes: a certificate is loaded, the Kubernetes API has
/// answered once, and no shutdown has begun.
pub struct Readiness {
    certificate: Arc<ReloadingResolver>,
    kubernetes: AtomicBool,
    stopping: AtomicBool,
}

impl Readiness {
    pub fn new(certificate: Arc<ReloadingResolver>) -> Self {
        Self {
            certificate,
            kubernetes: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// What keeps the server from being ready; empty when it is.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if self.stopping.load(Ordering::SeqCst) {
            problems.push("shutting down");
        }
        if !self.certificate.is_loaded() {
            problems.push("no serving certificate loaded");
        } else if !self.certificate.is_trusted() {
            problems.push("the webhooks' caBundle does not trust the serving certificate yet");
        }
        if !self.kubernetes.load(Ordering::SeqCst) {
            problems.push("Kubernetes API not reached yet");
        }
        problems
    }
}

/// Runs `privatize serve` until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> Result<()> {
    // Listen for signals first: a SIGTERM during start-up must drain, not kill.
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;

    let metrics = Arc::new(Metrics::new());
    let mut certificates = CertWatcher::new(CertSource::from_args(&args.tls)?, metrics.clone());
    certificates.load().await?;
    let readiness = Arc::new(Readiness::new(certificates.resolver()));
    let acceptor = tls::acceptor(certificates.resolver(), args.tls.client_ca_file.as_deref())?;

    let client = crate::k8s::client().await?;
    let certificates = certificates.with_trust(trust::Trust::new(
        client.clone(),
        args.renew.webhook_config.clone(),
    ));
    let own_namespace =
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| args.copy_job_namespace.clone());
    let renewer = renew::Renewer::new(&args.renew, &own_namespace, client.clone(), metrics.clone());
    // One ECR token cache for both webhooks: one GetAuthorizationToken per region.
    let counted = metrics.clone();
    let tokens = Arc::new(TokenCache::new().on_fetch(move |region| counted.token_fetched(region)));
    let secrets = Arc::new(Secrets::new(&args, tokens.clone()).await?);
    let credentials = Arc::new(Credentials {
        client: client.clone(),
        settings: secrets.settings().clone(),
        tokens: tokens.clone(),
        metrics: metrics.clone(),
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| "privatize".into()),
        own_namespace: own_namespace.clone(),
        namespaces: args.credential_namespaces.clone(),
    });
    let pods = Arc::new(
        Pods::new(
            &args,
            client.clone(),
            metrics.clone(),
            tokens,
            credentials.clone(),
        )
        .await?,
    );
    let review_budget = http::ReviewBudget::new(args.review_memory_budget, metrics.clone());
    let state = Arc::new(State {
        pods: pods.clone(),
        secrets,
        metrics,
        readiness: readiness.clone(),
        admission_budget: args.admission_budget,
        body_read_timeout: args.body_read_timeout,
        review_budget,
    });

    let https = bind(
        SocketAddr::new(args.listen_address, args.https_port),
        "HTTPS",
    )
    .await?;
    let http = bind(SocketAddr::new(args.listen_address, args.http_port), "HTTP").await?;
    info!(
        https_addr = %https.local_addr().context("reading the HTTPS address")?,
        http_addr = %http.local_addr().context("reading the HTTP address")?,
        "listening"
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The listeners accept until `stop` (after the drain); their connections
    // run on a tracker of their own, so the drain can see them go.
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let timeouts = Timeouts {
        header_read: args.header_read_timeout,
        idle: args.idle_timeout,
    };
    tracker.spawn(certificates.run(args.tls_reload_interval, shutdown.clone()));
    if let Some(renewer) = renewer {
        tracker.spawn(renewer.run(shutdown.clone()));
    }
    let writer = credentials.run(shutdown.clone());
    tracker.spawn(async move {
        if let Err(err) = writer.await {
            error!(error = %format!("{err:#}"), "the credential writer stopped; managed Secrets get no fresh logins until serve restarts");
        }
    });
    tracker.spawn(reach_kubernetes(
        client,
        readiness.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(listener::serve(
        https,
        Some(acceptor),
        http::admission_routes(state.clone()),
        timeouts,
        shutdown.clone(),
        stop.clone(),
        connections.clone(),
    ));
    tracker.spawn(listener::serve(
        http,
        None,
        http::probe_routes(state),
        timeouts,
        shutdown.clone(),
        stop.clone(),
        connections.clone(),
    ));
    let mut gate = tokio::spawn(pods.run(shutdown.clone()));

    let mut gate_result = None;
    tokio::select! {
        _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = sigint.recv() => info!(signal = "SIGINT", "shutting down"),
        result = &mut gate => {
            error!("the gate controller stopped; shutting down");
            gate_result = Some(result);
        }
    }

    // Fail /readyz first so endpoints stop sending new admissions here, then
    // close the connections gracefully and let requests in flight finish.
    // Whoever still connects (endpoints that have not caught up) is answered
    // once; the listeners close when no connection has been open for QUIET.
    readiness.stopping.store(true, Ordering::SeqCst);
    info!(delay = %humantime::format_duration(args.shutdown_delay), "/readyz fails now; connections close after the delay");
    let mut hurry = false;
    tokio::select! {
        _ = tokio::time::sleep(args.shutdown_delay) => {}
        _ = sigterm.recv() => { info!("second signal: closing at once"); hurry = true }
        _ = sigint.recv() => { info!("second signal: closing at once"); hurry = true }
    }
    shutdown.cancel();
    tracker.close();
    let drained = tokio::time::timeout(args.shutdown_timeout, async {
        if !hurry {
            until_quiet(&connections, args.shutdown_delay.min(QUIET)).await;
        }
        stop.cancel();
        connections.close();
        connections.wait().await;
        tracker.wait().await;
        match gate_result {
            Some(result) => result,
            None => gate.await,
        }
    })
    .await;
    match drained {
        Ok(Ok(Ok(()))) => {
            info!("stopped");
            Ok(())
        }
        Ok(Ok(Err(err))) => Err(err.context("gate controller")),
        Ok(Err(join)) => Err(anyhow::anyhow!("gate controller panicked: {join}")),
        Err(_) => {
            warn!(timeout = %humantime::format_duration(args.shutdown_timeout), "requests still in flight at the shutdown deadline; exiting anyway");
            Ok(())
        }
    }
}

/// How long no connection may be open before a draining serve stops
/// accepting (at most: never longer than `--shutdown-delay`, so a delay of 0
/// closes the listeners at once).
const QUIET: Duration = Duration::from_secs(2);

/// Returns once no connection has been open for `quiet`.
async fn until_quiet(connections: &TaskTracker, quiet: Duration) {
    let mut quiet_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        match (connections.is_empty(), quiet_since) {
            (false, _) => quiet_since = None,
            (true, None) => quiet_since = Some(now),
            (true, Some(since)) if now - since >= quiet => return,
            (true, Some(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} ({what})"))
}

/// Asks the apiserver for its version until it answers, then marks readiness.
async fn reach_kubernetes(
    client: kube::Client,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version());
        match attempt.await {
            Ok(Ok(version)) => {
                info!(version = %version.git_version, "Kubernetes API reached");
                readiness.kubernetes.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(err)) => {
                warn!(error = %err, retry_in = ?delay, "Kubernetes API not reachable yet")
            }
            Err(_) => warn!(retry_in = ?delay, "Kubernetes API did not answer within 10s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
